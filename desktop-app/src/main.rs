//! The storesync manager app. All of it lives in the library; this only picks the exit code.

fn main() -> std::process::ExitCode {
    match storesync_desktop::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storesync-desktop: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
