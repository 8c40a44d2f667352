use std::path::Path;
use std::process::Command;

fn main() {
    gst_plugin_version_helper::info();
    // The version information comes from the commit checked out. Without rerun-if-changed,
    // cargo reruns this script, and rebuilds the crate, whenever any file of the package
    // changes (a test run writes Python caches under examples/), so a run of scripts/test.sh
    // with nothing changed would compile the plugin again. Watch what names the commit instead:
    // HEAD, the branch it points to, and packed-refs (where that branch may live).
    println!("cargo:rerun-if-changed=build.rs");
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// The trimmed output of `git ARGS` in the package directory, if git ran and succeeded.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}
