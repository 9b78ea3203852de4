//! The `rawload` binary: everything lives in the library; see `cli`.
fn main() -> std::process::ExitCode {
    rawload::cli::main()
}
