{{- define "common.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "common.labels" -}}
app: {{ .Chart.Name }}
env: {{ .Values.global.env | default "dev" }}
{{- end -}}
{{- define "common.deployment" -}}
{{- $top := index . 0 -}}
{{- $extra := index . 1 -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "common.fullname" $top }}
  labels: {{- include "common.labels" $top | nindent 4 }}
spec:
  replicas: {{ $top.Values.replicas | default 1 }}
  template:
    spec:
      containers:
        - image: {{ $top.Values.global.registry }}/{{ $extra.image }}
{{- end -}}
