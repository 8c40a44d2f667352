// Placeholder: replaced by the element implementation.
use gst::glib;

pub fn register(_plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    Ok(())
}
