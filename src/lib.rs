//! shmframe: share raw video frames between GStreamer pipelines in separate processes through
//! POSIX shared memory.
//!
//! * [`transport`]: the segment, its `double` and `ring` layouts, reader registry and
//!   cross-process wait/wake. No GStreamer types; usable from plain Rust.
//! * `shmframesink` / `shmframesrc`: the GStreamer elements over it.

use gst::glib;

mod clock;
mod properties;
mod recycle;
mod shape;
mod shmframesink;
mod shmframesrc;
pub use shmframe_transport as transport;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    shmframesink::register(plugin)?;
    shmframesrc::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    shmframe,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    // GStreamer's name for the MIT license (Cargo.toml: MIT; the text is in LICENSE).
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
