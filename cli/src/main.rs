fn main() -> std::process::ExitCode {
    // The process's one async runtime, made first: library code runs its futures on it through
    // `imgmode_support::runtime::block_on`.
    if let Err(e) = imgmode_support::runtime::start() {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::from(1);
    }
    imgmode::main()
}
