//! `imgmode-deps`: what `cargo xtask deps` does, as a program of its own that builds in
//! seconds (`.ci/run` runs it first).

fn main() -> std::process::ExitCode {
    match imgmode_deps::install() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
