//! The `switchboard` binary: a shim over [`switchboard::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    switchboard::cli::main()
}
