//! `crm`: one binary in front of the whole system. Parsing and wiring live in the library.

fn main() -> std::process::ExitCode {
    crm_cli::main()
}
