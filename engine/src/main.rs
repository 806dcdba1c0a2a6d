//! The `quench` command: process set-up, then the command line (`cli/`).

mod cli;

/// sled allocates and frees many short-lived buffers per write; glibc's
/// malloc spends a third of the intake writer's time on them (and faults in
/// fresh pages for every large one). mimalloc reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's settings for a long-running server on a small host, as
/// environment variables (they can only be set before the allocator starts,
/// and setting them from inside would take `unsafe`): commit an arena's
/// memory when it is used rather than when it is reserved, and give freed
/// memory back to the kernel 10 ms after it is freed. With 100,000
/// incidents indexed and searched, RSS was 243 MB with mimalloc's
/// defaults, and 171-182 MB with these on 2 December 2026
/// (`scripts/bench-memory.sh`). A purge delay of 0 (memory back at once)
/// saved at most 12 MB more there (170 MB), but under load it
/// unmapped and faulted in the same pages over and over: at 100 alerts per
/// delivery, intake took 10-16 % more CPU per request. An operator's own
/// value of either variable wins.
const ALLOCATOR_ENV: [(&str, &str); 2] = [
    ("MIMALLOC_PURGE_DELAY", "10"),
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
];

/// `quench serve` starts itself again with [`ALLOCATOR_ENV`] (same pid,
/// same arguments) unless the environment already has those variables.
/// If that fails, it goes on with mimalloc's defaults.
fn serve_with_allocator_settings() {
    use std::os::unix::process::CommandExt;
    if std::env::args_os().nth(1).is_none_or(|a| a != "serve")
        || ALLOCATOR_ENV
            .iter()
            .all(|(k, _)| std::env::var_os(k).is_some())
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    for (k, v) in ALLOCATOR_ENV {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    // Returns only if the exec failed.
    let e = cmd.exec();
    eprintln!("quench: could not apply the allocator settings ({e}); going on without them");
}

/// Whether `--debug` was given: errors then show their backtrace (when
/// `RUST_BACKTRACE` captured one). Without it, an error is its message
/// chain and nothing else, whatever the environment says.
fn debug() -> bool {
    std::env::args_os().any(|a| a == "--debug")
}

/// `quench schema | head`: stdout closes early. Rust's `println!` panics
/// on that; a command line tool ends quietly instead, as `cat` does.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> std::process::ExitCode {
    serve_with_allocator_settings();
    quiet_on_closed_stdout();
    // Blocking-pool threads each keep an allocator heap of their own; 64
    // are plenty for the store reads they run, and bound that memory.
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(cli::run()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if debug() {
                eprintln!("quench: {e:?}");
            } else {
                eprintln!("quench: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
