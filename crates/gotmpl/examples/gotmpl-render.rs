//! Renders one template file with a values file, like a one-template chart:
//! `gotmpl-render TEMPLATE VALUES.yaml`. Used to compare with `helm template`.
use trueup_gotmpl::{yaml, Templates, Value};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: gotmpl-render TEMPLATE VALUES");
        std::process::exit(2);
    }
    let src = std::fs::read_to_string(&args[1]).expect("read template");
    let vals = std::fs::read_to_string(&args[2]).expect("read values");
    let values = yaml::from_yaml_str(&vals).unwrap_or_else(|e| {
        eprintln!("values: {e}");
        std::process::exit(1)
    });
    let mut top = std::collections::BTreeMap::new();
    top.insert("Values".to_string(), values);
    let mut t = Templates::new();
    let name = "mychart/templates/t.yaml";
    if let Err(e) = t.add(name, &src) {
        println!("Error: {}", e.helm_message());
        return;
    }
    match t.render(name, &Value::map(top)) {
        Ok(s) => print!("{s}"),
        Err(e) => println!("Error: {}", e.helm_message()),
    }
}
