//! podcheck: reads a list of pods as JSON (`kubectl get pods -o json`) on stdin and prints every way
//! its pods break Pod Security "restricted" or ChatFlow's pod rules; fails when any does.
//! `--needs-api` allows a service-account token (the operator's own pods).

use std::io::Read;
use std::process::ExitCode;

use chatflow_operator::desired::restricted;
use k8s_openapi::api::core::v1::Pod;

fn main() -> ExitCode {
    let needs_api = std::env::args().any(|a| a == "--needs-api");
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("podcheck: cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    // kubectl prints a list of pods as kind `List`, which k8s-openapi's `List<Pod>` refuses.
    let pods: Vec<Pod> = match serde_json::from_str::<serde_json::Value>(&input)
        .and_then(|v| serde_json::from_value(v["items"].clone()))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("podcheck: stdin is not a list of pods: {e}");
            return ExitCode::from(2);
        }
    };
    if pods.is_empty() {
        eprintln!("podcheck: no pods to check");
        return ExitCode::from(2);
    }
    let mut bad = 0;
    for pod in &pods {
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        let Some(spec) = &pod.spec else { continue };
        let v = restricted::violations(spec, needs_api);
        if v.is_empty() {
            println!("{name}: meets the restricted profile");
        } else {
            bad += 1;
            for line in v {
                println!("{name}: {line}");
            }
        }
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
