fn main() -> std::process::ExitCode {
    imgmode::main()
}
