//! What the two elements' properties have in common: the segment they name (`shm-name`) and
//! the shape it must carry (`shape`) are specified, set and checked alike, and both have a
//! `stats` structure. A refused name or shape is logged when it is set and refuses the start,
//! so that a typo is noticed whichever comes first.

use gst::glib;
use gst::prelude::*;

use crate::shape::{Shape, ShapeSetting};
use crate::transport;

/// Implements `From` both ways between an element's enum and the transport's enum of the same
/// variants, so that the one list of variants maps them.
macro_rules! same_variants {
    ($ours:ident, $theirs:ty, [$($variant:ident),+ $(,)?]) => {
        impl From<$ours> for $theirs {
            fn from(value: $ours) -> Self {
                match value {
                    $($ours::$variant => Self::$variant,)+
                }
            }
        }

        impl From<$theirs> for $ours {
            fn from(value: $theirs) -> Self {
                type Theirs = $theirs;
                match value {
                    $(Theirs::$variant => Self::$variant,)+
                }
            }
        }
    };
}
pub(crate) use same_variants;

/// The `shm-name` property; `blurb` says what the element does with the segment.
pub fn shm_name_spec(blurb: &str) -> glib::ParamSpec {
    glib::ParamSpecString::builder("shm-name")
        .nick("Shared-memory name")
        .blurb(blurb)
        .mutable_ready()
        .build()
}

/// The `shape` property; `nick` and `blurb` say what the element does with it.
pub fn shape_spec(nick: &str, blurb: &str) -> glib::ParamSpec {
    glib::ParamSpecString::builder("shape")
        .nick(nick)
        .blurb(blurb)
        .mutable_ready()
        .build()
}

/// The read-only `stats` structure; `blurb` names its fields.
pub fn stats_spec(blurb: &str) -> glib::ParamSpec {
    glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
        .nick("Statistics")
        .blurb(blurb)
        .read_only()
        .build()
}

/// The new value of `shm-name` (empty: none); a name the transport refuses is logged on `obj`.
pub fn shm_name_from(
    value: &glib::Value,
    cat: gst::DebugCategory,
    obj: &impl IsA<glib::Object>,
) -> Option<String> {
    let name = value
        .get::<Option<String>>()
        .expect("type checked upstream")
        .filter(|s| !s.is_empty());
    if let Some(Err(err)) = name.as_deref().map(transport::validate_name) {
        gst::warning!(cat, obj = obj, "{err}; starting will fail");
    }
    name
}

/// Sets `shape` from a new value of the property; a refused one is logged on `obj`.
pub fn set_shape(
    shape: &mut ShapeSetting,
    value: &glib::Value,
    cat: gst::DebugCategory,
    obj: &impl IsA<glib::Object>,
) {
    let text = value
        .get::<Option<String>>()
        .expect("type checked upstream");
    let kept = shape.shape();
    if let Err(err) = shape.set(text.as_deref()) {
        let kept = kept.map_or_else(|| "no shape".to_string(), |s| s.to_string());
        gst::warning!(
            cat,
            obj = obj,
            "{err}; keeping {kept}, and starting will fail until a valid shape (or none) is set"
        );
    }
}

/// The segment name and expected shape to start with, or the error that refuses them.
/// `how_to_name` follows "No shm-name set: " when none is.
pub fn checked(
    shm_name: Option<&str>,
    shape: &ShapeSetting,
    how_to_name: &str,
) -> Result<(String, Option<Shape>), gst::ErrorMessage> {
    let Some(shm_name) = shm_name else {
        return Err(gst::error_msg!(
            gst::ResourceError::Settings,
            ("No shm-name set: {how_to_name}")
        ));
    };
    transport::validate_name(shm_name)
        .map_err(|err| gst::error_msg!(gst::ResourceError::Settings, ("{err}")))?;
    let shape = shape.checked().map_err(|refused| {
        gst::error_msg!(
            gst::ResourceError::Settings,
            ("The shape property was refused: {refused}")
        )
    })?;
    Ok((shm_name.to_string(), shape))
}
