//! Single-template cases whose expected output (or error) was recorded from
//! real `helm template` v4.3.1 with tests/helm_cases_values.yaml as values
//! and the template at `mychart/templates/t.yaml`. Runs without helm.

use std::collections::BTreeMap;
use trueup_gotmpl::{yaml, Templates, Value};

#[test]
fn recorded_helm_cases() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("helm_cases.json")).unwrap())
            .unwrap();
    let vals =
        yaml::from_yaml_str(&std::fs::read_to_string(dir.join("helm_cases_values.yaml")).unwrap())
            .unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let t = case["t"].as_str().unwrap();
        let mut top = BTreeMap::new();
        top.insert("Values".to_string(), vals.deep_copy());
        let name = "mychart/templates/t.yaml";
        let mut set = Templates::new();
        let got = set
            .add(name, t)
            .and_then(|_| set.render(name, &Value::map(top)))
            .map_err(|e| e.helm_message());
        let ok = match (&got, case.get("out"), case.get("err")) {
            (Ok(g), Some(want), _) => g.trim_end() == want.as_str().unwrap().trim_end(),
            (Err(g), _, Some(want)) => g == want.as_str().unwrap(),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "template {t:?}\n   want {:?}\n   got  {got:?}",
                case.get("out").or(case.get("err"))
            ));
        }
    }
    println!(
        "recorded cases: {} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
