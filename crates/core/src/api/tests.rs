use super::*;
use crate::yaml::parse_objects;

const SEED: &[(&str, &str)] = &[
    (
        "apps-source.yaml",
        include_str!("../../tests/seed/apps-source.yaml"),
    ),
    (
        "apps-kustomization.yaml",
        include_str!("../../tests/seed/apps-kustomization.yaml"),
    ),
    (
        "monitoring-prometheus.yaml",
        include_str!("../../tests/seed/monitoring-prometheus.yaml"),
    ),
    (
        "infrastructure-vpc.yaml",
        include_str!("../../tests/seed/infrastructure-vpc.yaml"),
    ),
    (
        "apps-flux-kustomization.yaml",
        include_str!("../../tests/seed/apps-flux-kustomization.yaml"),
    ),
    (
        "notifications.yaml",
        include_str!("../../tests/seed/notifications.yaml"),
    ),
];

#[test]
fn every_flux_manifest_of_the_seed_article_parses() {
    let mut kinds = Vec::new();
    for (file, text) in SEED {
        for obj in parse_objects(text, file).unwrap() {
            let typed = FluxObject::from_object(&obj)
                .unwrap_or_else(|e| panic!("{file}: {e}"))
                .unwrap_or_else(|| panic!("{file}: {} is not a Flux kind", obj.kind()));
            kinds.push(typed.kind());
        }
    }
    use FluxKind::*;
    assert_eq!(
        kinds,
        [
            GitRepository,
            Kustomization,
            HelmRepository,
            HelmRelease,
            Terraform,
            Kustomization,
            Provider,
            Alert
        ]
    );
}

#[test]
fn seed_values_are_read_as_written() {
    let objs = parse_objects(SEED[2].1, "monitoring-prometheus.yaml").unwrap();
    let Some(FluxObject::HelmRelease(hr)) = FluxObject::from_object(&objs[1]).unwrap() else {
        panic!("not a HelmRelease")
    };
    let chart = hr.spec.chart.as_ref().unwrap();
    assert_eq!(chart.spec.version.as_deref(), Some(">=58.0.0 <59.0.0"));
    assert_eq!(
        chart.spec.source_ref.namespace.as_deref(),
        Some("flux-system")
    );
    assert_eq!(
        hr.spec.install.unwrap().remediation.unwrap().retries,
        Some(3)
    );
    let upgrade = hr.spec.upgrade.unwrap();
    assert!(upgrade.cleanup_on_fail);
    assert_eq!(
        upgrade.remediation.unwrap().strategy.as_deref(),
        Some("rollback")
    );
    assert_eq!(
        hr.spec.values.unwrap()["grafana"]["adminPassword"],
        "${GRAFANA_ADMIN_PASSWORD}"
    );

    let objs = parse_objects(SEED[3].1, "infrastructure-vpc.yaml").unwrap();
    let Some(FluxObject::Terraform(tf)) = FluxObject::from_object(&objs[0]).unwrap() else {
        panic!("not a Terraform")
    };
    assert_eq!(tf.spec.approve_plan, "auto");
    assert_eq!(tf.spec.interval.duration().as_secs(), 900);
    assert_eq!(tf.spec.vars[1].value.as_ref().unwrap(), "10.0.0.0/16");
    assert!(tf
        .spec
        .backend_config
        .unwrap()
        .custom_configuration
        .unwrap()
        .contains("backend \"s3\""));
}

fn parse_one(yaml: &str) -> Result<Option<FluxObject>, ApiError> {
    let objs = parse_objects(yaml, "test.yaml").unwrap();
    FluxObject::from_object(&objs[0])
}

#[test]
fn unknown_fields_are_named_with_their_path() {
    let err = parse_one(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: app, namespace: flux-system}\nspec:\n  interval: 1m\n  url: https://example.com/x\n  ref:\n    branch: main\n    brnach: oops\n",
    )
    .unwrap_err();
    assert_eq!(err.field_path(), Some("spec.ref.brnach"));
    assert!(
        err.to_string().starts_with(
            "GitRepository/flux-system/app: field `spec.ref.brnach`: unknown field `brnach`"
        ),
        "{err}"
    );
}

#[test]
fn wrong_types_are_named_with_their_path() {
    let err = parse_one(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps}\nspec:\n  interval: 10m\n  prune: \"yes\"\n  sourceRef: {kind: GitRepository, name: fleet}\n",
    )
    .unwrap_err();
    assert_eq!(err.field_path(), Some("spec.prune"));
    assert!(err.to_string().contains("expected a boolean"), "{err}");

    let err = parse_one(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps}\nspec:\n  interval: ten minutes\n  prune: true\n  sourceRef: {kind: GitRepository, name: fleet}\n",
    )
    .unwrap_err();
    assert_eq!(err.field_path(), Some("spec.interval"));
    assert!(
        err.to_string().contains("invalid duration `ten minutes`"),
        "{err}"
    );
}

#[test]
fn missing_required_fields_and_bad_versions() {
    let err = parse_one(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps}\nspec:\n  prune: true\n  sourceRef: {kind: GitRepository, name: fleet}\n",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("missing field `interval`"),
        "{err}"
    );

    let err = parse_one(
        "apiVersion: kustomize.toolkit.fluxcd.io/v9\nkind: Kustomization\nmetadata: {name: apps}\nspec: {}\n",
    )
    .unwrap_err();
    assert!(matches!(err, ApiError::UnsupportedVersion { .. }), "{err}");
    assert!(
        err.to_string().contains("kustomize.toolkit.fluxcd.io/v1"),
        "{err}"
    );
}

#[test]
fn non_flux_kinds_are_not_flux_objects() {
    assert_eq!(
        parse_one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n").unwrap(),
        None
    );
    // kustomize's own Kustomization file is not Flux's Kustomization.
    let cluster = include_str!("../../tests/seed/cluster-kustomization.yaml");
    let value = crate::yaml::parse_documents(cluster, "kustomization.yaml").unwrap();
    assert_eq!(value[0]["apiVersion"], "kustomize.config.k8s.io/v1beta1");
}
