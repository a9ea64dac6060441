//! crdgen: prints the ChatRoomSet CustomResourceDefinition, or writes it to the given path.

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = chatflow_operator::crd_yaml();
    match std::env::args().nth(1) {
        None => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(&path, yaml) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crdgen: cannot write {path}: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
