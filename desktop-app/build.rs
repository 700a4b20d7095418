//! Checks that the UI is built (Tauri embeds `ui/dist` at compile time), then runs
//! `tauri-build`.

fn main() {
    let manifest =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let index = manifest.join("ui").join("dist").join("index.html");
    println!("cargo:rerun-if-changed={}", index.display());
    if !index.exists() {
        // A panic is how a build script stops the build with a message.
        panic!(
            "\n\nThe desktop app embeds the built UI, and {} is missing.\n\
             Build the UI first:\n\n    (cd desktop-app/ui && npm ci && npm run build)\n\n",
            index.display()
        );
    }
    tauri_build::build();
}
