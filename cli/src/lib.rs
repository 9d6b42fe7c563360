//! The `imgmode` command line: argument parsing and dispatch into the library crates.
//!
//! - [`ambient`]: the only module that reads the process's surroundings (environment, command
//!   line, executable path, kernel facts); read once, passed down as values.
//! - [`args`]: clap's definitions, and the conversions of argument types into library options.
//! - [`cmd`]: one function per verb, by area, behind [`cmd::run`].
//! - [`output`]: `--format` and printing.

pub mod ambient;
pub mod args;
pub mod cmd;
pub mod output;

pub use ambient::Ambient;
pub use args::Cli;

/// The process entry point (after `main` started the async runtime): returns the exit code.
pub fn main() -> std::process::ExitCode {
    let ambient = Ambient::read();
    init_tracing(ambient.rust_log.as_deref());
    let result = if ambient.is_ostree_container() {
        cmd::ostree_container(ambient.args.iter().cloned())
    } else {
        let cli = match Cli::parse_args(&ambient.args) {
            Ok(cli) => cli,
            // help and version as clap prints them; usage errors made terminal-safe (exit 2)
            Err(e) if !e.use_stderr() => e.exit(),
            Err(e) => {
                eprint!("{}", output::terminal_safe(&e.render().to_string()));
                return std::process::ExitCode::from(e.exit_code().clamp(0, 255) as u8);
            }
        };
        cmd::run(cli, &ambient)
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", output::terminal_safe(&format!("{e:#}")));
            std::process::ExitCode::from(1)
        }
    }
}

/// Log to stderr, filtered by `RUST_LOG` (warnings when it is unset or invalid).
fn init_tracing(rust_log: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = rust_log
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .compact()
        .init();
}
