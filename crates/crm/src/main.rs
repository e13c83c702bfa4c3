//! `crm`: one binary in front of the whole system. Parsing and wiring live in the library.

/// mimalloc instead of the system allocator: the projectors and the append path allocate
/// and free many small objects across threads (decoded events, headers, rows), where glibc's
/// malloc spent about a third of a rebuild's CPU time (docs/benchmarks.md, 2026-12-01).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    crm_cli::main()
}
