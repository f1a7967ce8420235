#!/usr/bin/env python3
"""Generates the large conformance/benchmark fixtures under tests/charts:
`operator` (one chart, many components x kinds, heavy include/tpl) and
`libheavy` (a library chart `common` used by the parent and by several
subcharts, each vendoring its own copy, Bitnami style). Re-run after editing;
the output is committed so tests need no Python."""
import os, shutil, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "charts")

COMMON_HELPERS = r'''{{/* Library helpers, in the style of bitnami/common. */}}
{{- define "common.names.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "common.names.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- define "common.names.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "common.tplvalues.render" -}}
{{- $value := typeIs "string" .value | ternary .value (.value | toYaml) }}
{{- if contains "{{" (toJson .value) }}
  {{- if .scope }}
      {{- tpl (cat "{{- with $.RelativeScope -}}" $value "{{- end }}") (merge (dict "RelativeScope" .scope) .context) }}
  {{- else }}
    {{- tpl $value .context }}
  {{- end }}
{{- else }}
    {{- $value }}
{{- end }}
{{- end -}}
{{- define "common.labels.standard" -}}
{{- if and (hasKey . "customLabels") (hasKey . "context") -}}
{{- $default := dict "app.kubernetes.io/name" (include "common.names.name" .context) "helm.sh/chart" (include "common.names.chart" .context) "app.kubernetes.io/instance" .context.Release.Name "app.kubernetes.io/managed-by" .context.Release.Service -}}
{{- with .context.Chart.AppVersion -}}
{{- $_ := set $default "app.kubernetes.io/version" . -}}
{{- end -}}
{{ template "common.tplvalues.merge" (dict "values" (list .customLabels $default) "context" .context) }}
{{- else -}}
app.kubernetes.io/name: {{ include "common.names.name" . }}
helm.sh/chart: {{ include "common.names.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | replace "+" "_" | quote }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- define "common.labels.matchLabels" -}}
{{- if and (hasKey . "customLabels") (hasKey . "context") -}}
{{ merge (pick (include "common.tplvalues.render" (dict "value" .customLabels "context" .context) | fromYaml) "app.kubernetes.io/name" "app.kubernetes.io/instance") (dict "app.kubernetes.io/name" (include "common.names.name" .context) "app.kubernetes.io/instance" .context.Release.Name ) | toYaml }}
{{- else -}}
app.kubernetes.io/name: {{ include "common.names.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- end -}}
{{- define "common.names.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "common.tplvalues.merge" -}}
{{- $dst := dict -}}
{{- range .values -}}
{{- $dst = include "common.tplvalues.render" (dict "value" . "context" $.context "scope" $.scope) | fromYaml | merge $dst -}}
{{- end -}}
{{ $dst | toYaml }}
{{- end -}}
{{- define "common.images.image" -}}
{{- $registryName := default .imageRoot.registry ((.global).imageRegistry) -}}
{{- $repositoryName := .imageRoot.repository -}}
{{- $separator := ":" -}}
{{- $termination := .imageRoot.tag | toString -}}
{{- if .imageRoot.digest }}
    {{- $separator = "@" -}}
    {{- $termination = .imageRoot.digest | toString -}}
{{- end -}}
{{- if $registryName }}
    {{- printf "%s/%s%s%s" $registryName $repositoryName $separator $termination -}}
{{- else -}}
    {{- printf "%s%s%s"  $repositoryName $separator $termination -}}
{{- end -}}
{{- end -}}
{{- define "common.resources.preset" -}}
{{- $presets := dict
  "nano" (dict "requests" (dict "cpu" "100m" "memory" "128Mi") "limits" (dict "cpu" "150m" "memory" "192Mi"))
  "small" (dict "requests" (dict "cpu" "500m" "memory" "512Mi") "limits" (dict "cpu" "750m" "memory" "768Mi"))
  "large" (dict "requests" (dict "cpu" "1.0" "memory" "2048Mi") "limits" (dict "cpu" "1.5" "memory" "3072Mi"))
 }}
{{- if hasKey $presets .type -}}
{{- index $presets .type | toYaml -}}
{{- else -}}
{{- printf "ERROR: Preset key '%s' invalid. Allowed values are %s" .type (join "," (keys $presets | sortAlpha)) | fail -}}
{{- end -}}
{{- end -}}
{{- define "common.capabilities.deployment.apiVersion" -}}
{{- if semverCompare "<1.14-0" .Capabilities.KubeVersion.Version -}}
{{- print "extensions/v1beta1" -}}
{{- else -}}
{{- print "apps/v1" -}}
{{- end -}}
{{- end -}}
'''

def w(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)

def common_chart(d):
    w(os.path.join(d, "Chart.yaml"), "apiVersion: v2\nname: common\nversion: 2.0.0\ntype: library\n")
    w(os.path.join(d, "templates", "_helpers.tpl"), COMMON_HELPERS)

WORKLOAD = r'''{{- $c := index .Values.components "%(c)s" -}}
{{- if $c.enabled }}
apiVersion: {{ include "common.capabilities.deployment.apiVersion" . }}
kind: Deployment
metadata:
  name: {{ include "common.names.fullname" . }}-%(c)s
  namespace: {{ include "common.names.namespace" . | quote }}
  labels: {{- include "common.labels.standard" (dict "customLabels" (merge (dict "component" "%(c)s") .Values.commonLabels) "context" $) | nindent 4 }}
  {{- if .Values.commonAnnotations }}
  annotations: {{- include "common.tplvalues.render" (dict "value" .Values.commonAnnotations "context" $) | nindent 4 }}
  {{- end }}
spec:
  replicas: {{ $c.replicas | default 1 }}
  selector:
    matchLabels: {{- include "common.labels.matchLabels" (dict "customLabels" .Values.podLabels "context" $) | nindent 6 }}
      component: %(c)s
  template:
    metadata:
      annotations:
        checksum/config: {{ include (print $.Template.BasePath "/%(c)s-configmap.yaml") . | sha256sum }}
      labels: {{- include "common.labels.matchLabels" (dict "customLabels" .Values.podLabels "context" $) | nindent 8 }}
        component: %(c)s
    spec:
      serviceAccountName: {{ include "common.names.fullname" . }}-%(c)s
      {{- with .Values.nodeSelector }}
      nodeSelector: {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: %(c)s
          image: {{ include "common.images.image" (dict "imageRoot" $c.image "global" .Values.global) }}
          imagePullPolicy: {{ $c.image.pullPolicy | default "IfNotPresent" }}
          args:
            {{- range $i, $a := $c.args }}
            - {{ tpl $a $ | quote }}
            {{- end }}
          env:
            - name: COMPONENT
              value: %(c)s
            {{- range $k, $v := $c.env }}
            - name: {{ $k | upper | replace "-" "_" }}
              value: {{ tpl (toString $v) $ | quote }}
            {{- end }}
          ports:
            - name: http
              containerPort: {{ $c.port }}
          {{- if $c.resources }}
          resources: {{- toYaml $c.resources | nindent 12 }}
          {{- else }}
          resources: {{- include "common.resources.preset" (dict "type" ($c.preset | default "nano")) | nindent 12 }}
          {{- end }}
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            initialDelaySeconds: {{ dig "probes" "initialDelay" 10 $c }}
{{- end }}
'''

CONFIGMAP = r'''{{- $c := index .Values.components "%(c)s" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "common.names.fullname" . }}-%(c)s
  labels: {{- include "common.labels.standard" . | nindent 4 }}
data:
  component.yaml: |
    {{- include "common.tplvalues.render" (dict "value" $c.config "context" $) | nindent 4 }}
  settings.json: {{ $c.config | toJson | quote }}
  {{- range $k, $v := $c.files }}
  {{ $k }}: {{ tpl $v $ | quote }}
  {{- end }}
'''

SERVICE = r'''{{- $c := index .Values.components "%(c)s" -}}
{{- if and $c.enabled $c.service.enabled }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "common.names.fullname" . }}-%(c)s
  labels: {{- include "common.labels.standard" . | nindent 4 }}
spec:
  type: {{ $c.service.type | default "ClusterIP" }}
  ports:
    - name: http
      port: {{ $c.service.port | default 80 }}
      targetPort: http
  selector: {{- include "common.labels.matchLabels" . | nindent 4 }}
    component: %(c)s
{{- end }}
'''

RBAC = r'''{{- $c := index .Values.components "%(c)s" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "common.names.fullname" . }}-%(c)s
  labels: {{- include "common.labels.standard" . | nindent 4 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ include "common.names.fullname" . }}-%(c)s
rules:
  {{- range $c.rules }}
  - apiGroups: {{ toJson .groups }}
    resources: {{ toJson .resources }}
    verbs: {{ toJson (.verbs | default (list "get" "list" "watch")) }}
  {{- end }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ include "common.names.fullname" . }}-%(c)s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ include "common.names.fullname" . }}-%(c)s
subjects:
  - kind: ServiceAccount
    name: {{ include "common.names.fullname" . }}-%(c)s
    namespace: {{ .Release.Namespace }}
'''

def component_values(i, c):
    return f'''  {c}:
    enabled: {"false" if i % 7 == 3 else "true"}
    replicas: {1 + i % 3}
    port: {8000 + i}
    preset: {["nano", "small", "large"][i % 3]}
    image:
      registry: ghcr.io
      repository: example/{c}
      tag: "v1.{i}.0"
    args:
      - --name={{{{ .Release.Name }}}}-{c}
      - --namespace={{{{ .Release.Namespace }}}}
      - --level={{{{ .Values.logLevel }}}}
    env:
      log-level: "{{{{ .Values.logLevel }}}}"
      cluster: "{{{{ .Values.clusterDomain }}}}"
      index: {i}
    service:
      enabled: {"true" if i % 2 == 0 else "false"}
      port: {9000 + i}
    probes:
      initialDelay: {5 + i}
    rules:
      - groups: [""]
        resources: [pods, services]
      - groups: [apps]
        resources: [deployments]
        verbs: [get, update]
    config:
      name: "{{{{ .Release.Name }}}}-{c}"
      replicas: {1 + i % 3}
      nested:
        domain: "{{{{ .Values.clusterDomain }}}}"
        list: [a, b, "{{{{ .Chart.Name }}}}"]
    files:
      app.properties: |
        component={c}
        release={{{{ .Release.Name }}}}
'''

def operator(n=40):
    d = os.path.join(ROOT, "operator")
    shutil.rmtree(d, ignore_errors=True)
    w(os.path.join(d, "Chart.yaml"), "apiVersion: v2\nname: operator\nversion: 3.1.4\nappVersion: \"9.9.9+build\"\ndependencies:\n  - name: common\n    version: 2.0.0\n")
    common_chart(os.path.join(d, "charts", "common"))
    comps = [f"comp{i:02d}" for i in range(n)]
    vals = "logLevel: info\nclusterDomain: cluster.local\ncommonLabels:\n  team: platform\ncommonAnnotations:\n  owner: \"{{ .Release.Name }}\"\npodLabels:\n  tier: backend\nnodeSelector:\n  kubernetes.io/os: linux\nglobal:\n  imageRegistry: \"\"\ncomponents:\n"
    for i, c in enumerate(comps):
        vals += component_values(i, c)
        w(os.path.join(d, "templates", f"{c}-deployment.yaml"), WORKLOAD % {"c": c})
        w(os.path.join(d, "templates", f"{c}-configmap.yaml"), CONFIGMAP % {"c": c})
        w(os.path.join(d, "templates", f"{c}-service.yaml"), SERVICE % {"c": c})
        w(os.path.join(d, "templates", f"{c}-rbac.yaml"), RBAC % {"c": c})
    w(os.path.join(d, "values.yaml"), vals)
    w(os.path.join(d, "templates", "NOTES.txt"), "Installed {{ len .Values.components }} components.\n")

def libheavy():
    d = os.path.join(ROOT, "libheavy")
    shutil.rmtree(d, ignore_errors=True)
    subs = ["api", "worker", "web"]
    deps = "".join(f"  - name: {s}\n    version: 0.1.0\n" for s in subs)
    w(os.path.join(d, "Chart.yaml"), "apiVersion: v2\nname: libheavy\nversion: 0.1.0\nappVersion: \"1.0\"\ndependencies:\n  - name: common\n    version: 2.0.0\n" + deps)
    common_chart(os.path.join(d, "charts", "common"))
    vals = "global:\n  imageRegistry: registry.example.com\nworker:\n  replicas: 4\n"
    w(os.path.join(d, "values.yaml"), vals)
    w(os.path.join(d, "templates", "cm.yaml"), '''apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "common.names.fullname" . }}
  labels: {{- include "common.labels.standard" . | nindent 4 }}
data:
  subcharts: {{ .Values | keys | sortAlpha | join "," | quote }}
''')
    for i, s in enumerate(subs):
        sd = os.path.join(d, "charts", s)
        w(os.path.join(sd, "Chart.yaml"), f"apiVersion: v2\nname: {s}\nversion: 0.1.0\nappVersion: \"{i}.0\"\ndependencies:\n  - name: common\n    version: 2.0.0\n")
        common_chart(os.path.join(sd, "charts", "common"))
        w(os.path.join(sd, "values.yaml"), f"replicas: 1\nimage:\n  repository: example/{s}\n  tag: \"{i}.0\"\nextraLabels:\n  sub: {s}\nnameOverride: \"\"\n")
        w(os.path.join(sd, "templates", "deploy.yaml"), '''apiVersion: {{ include "common.capabilities.deployment.apiVersion" . }}
kind: Deployment
metadata:
  name: {{ include "common.names.fullname" . }}
  labels: {{- include "common.labels.standard" (dict "customLabels" .Values.extraLabels "context" $) | nindent 4 }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {{- include "common.labels.matchLabels" . | nindent 6 }}
  template:
    spec:
      containers:
        - name: main
          image: {{ include "common.images.image" (dict "imageRoot" .Values.image "global" .Values.global) }}
''')

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    operator(n)
    libheavy()
