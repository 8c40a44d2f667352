//! The `shape` property: `WIDTHxHEIGHT` or `WIDTHxHEIGHT:FORMAT` (a GstVideoFormat name).

use gst_video::VideoFormat;
use std::fmt;
use std::str::FromStr;

/// Raw formats the elements accept (and that a shape without a format is sized for).
pub const SUPPORTED_FORMATS: &[VideoFormat] = &[
    VideoFormat::Rgb,
    VideoFormat::Bgr,
    VideoFormat::Rgba,
    VideoFormat::Bgra,
    VideoFormat::Argb,
    VideoFormat::Abgr,
    VideoFormat::Rgbx,
    VideoFormat::Bgrx,
    VideoFormat::Xrgb,
    VideoFormat::Xbgr,
    VideoFormat::Gray8,
    VideoFormat::Gray16Le,
    VideoFormat::Gray16Be,
    VideoFormat::I420,
    VideoFormat::Yv12,
    VideoFormat::Nv12,
    VideoFormat::Nv21,
    VideoFormat::Yuy2,
    VideoFormat::Uyvy,
    VideoFormat::Y42b,
    VideoFormat::Y444,
    VideoFormat::Rgb16,
    VideoFormat::Bgr16,
    VideoFormat::Argb64,
    VideoFormat::Ayuv64,
    VideoFormat::P01010le,
    VideoFormat::I42010le,
];

pub const MAX_DIMENSION: u32 = 32768;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub width: u32,
    pub height: u32,
    pub format: Option<VideoFormat>,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)?;
        if let Some(format) = self.format {
            write!(f, ":{}", format.to_str())?;
        }
        Ok(())
    }
}

/// The `shape` property of both elements, parsed when it is set: a refused value keeps the
/// previous shape, and starting fails with the parser's explanation until a valid shape (or
/// none) is set, so that a typo never goes unnoticed.
#[derive(Clone, Debug, Default)]
pub struct ShapeSetting {
    shape: Option<Shape>,
    refused: Option<String>,
}

impl ShapeSetting {
    /// Takes the property's new text (empty or blank: no shape); `Err` explains a refusal.
    pub fn set(&mut self, text: Option<&str>) -> Result<(), String> {
        match text.filter(|s| !s.trim().is_empty()).map(Shape::from_str) {
            None => self.shape = None,
            Some(Ok(shape)) => self.shape = Some(shape),
            Some(Err(err)) => {
                self.refused = Some(err.clone());
                return Err(err);
            }
        }
        self.refused = None;
        Ok(())
    }

    /// The shape in effect (kept while a later value is refused).
    pub fn shape(&self) -> Option<Shape> {
        self.shape
    }

    /// The shape to start with, or why the last value set was refused.
    pub fn checked(&self) -> Result<Option<Shape>, &str> {
        match &self.refused {
            Some(refused) => Err(refused),
            None => Ok(self.shape),
        }
    }
}

impl FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Shape, String> {
        let usage = "expected WIDTHxHEIGHT or WIDTHxHEIGHT:FORMAT, e.g. 1920x1080 or 640x480:RGBA";
        let (dims, format) = match s.split_once(':') {
            Some((d, f)) => (d, Some(f)),
            None => (s, None),
        };
        let (w, h) = dims
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("invalid shape {s:?}: {usage}"))?;
        let dim = |v: &str, what: &str| -> Result<u32, String> {
            match v.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_DIMENSION).contains(&n) => Ok(n),
                _ => Err(format!(
                    "invalid shape {s:?}: {what} {v:?} is not a number in 1..={MAX_DIMENSION}; \
                     {usage}"
                )),
            }
        };
        let width = dim(w, "width")?;
        let height = dim(h, "height")?;
        let format = match format {
            None => None,
            Some(f) => {
                let vf = VideoFormat::from_string(f.trim());
                if vf == VideoFormat::Unknown || vf == VideoFormat::Encoded {
                    return Err(format!(
                        "invalid shape {s:?}: {f:?} is not a GstVideoFormat name (e.g. RGBA, \
                         I420, NV12, GRAY8)"
                    ));
                }
                if !SUPPORTED_FORMATS.contains(&vf) {
                    return Err(format!(
                        "invalid shape {s:?}: shmframe does not carry {f}; the formats it \
                         carries are {}",
                        supported_format_names()
                    ));
                }
                Some(vf)
            }
        };
        Ok(Shape {
            width,
            height,
            format,
        })
    }
}

impl Shape {
    /// Whether a stream of this width, height and format fits the shape.
    pub fn matches(&self, info: &gst_video::VideoInfo) -> bool {
        info.width() == self.width
            && info.height() == self.height
            && self.format.is_none_or(|f| f == info.format())
    }

    /// The shape a stream has, for messages naming both sides of a mismatch.
    pub fn of(info: &gst_video::VideoInfo) -> Shape {
        Shape {
            width: info.width(),
            height: info.height(),
            format: Some(info.format()),
        }
    }

    /// Bytes a slot needs for this shape: one frame in its format or, for a shape without a
    /// format, in the largest of the `offered` formats (what upstream can send; every
    /// supported format when it does not say) whose frame fits a slot at all. A larger format
    /// negotiated later makes the sink recreate the segment, as without a shape.
    pub fn slot_size(&self, offered: &[VideoFormat]) -> u64 {
        let frame_size = |f: VideoFormat| {
            gst_video::VideoInfo::builder(f, self.width, self.height)
                .build()
                .ok()
                .map(|i| i.size() as u64)
        };
        if let Some(format) = self.format {
            return frame_size(format).unwrap_or(u64::MAX);
        }
        let offered: Vec<u64> = SUPPORTED_FORMATS
            .iter()
            .filter(|f| offered.is_empty() || offered.contains(f))
            .filter_map(|&f| frame_size(f))
            .collect();
        let smallest = offered.iter().copied().min().unwrap_or(u64::MAX);
        offered
            .into_iter()
            .filter(|&size| size <= crate::transport::MAX_SLOT_CAPACITY)
            .max()
            .unwrap_or(smallest)
    }

    /// Caps restricting a raw video pad to this shape.
    pub fn caps(&self) -> gst::Caps {
        let formats: Vec<&str> = match self.format {
            Some(f) => vec![f.to_str().as_str()],
            None => SUPPORTED_FORMATS
                .iter()
                .map(|f| f.to_str().as_str())
                .collect(),
        };
        gst::Caps::builder("video/x-raw")
            .field("format", gst::List::new(formats))
            .field("width", self.width as i32)
            .field("height", self.height as i32)
            .field(
                "framerate",
                gst::FractionRange::new(gst::Fraction::new(0, 1), gst::Fraction::new(i32::MAX, 1)),
            )
            .build()
    }
}

/// The supported formats' names, comma-separated, for messages.
pub fn supported_format_names() -> String {
    SUPPORTED_FORMATS
        .iter()
        .map(|f| f.to_str().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The supported formats `caps` allows (every supported format for caps that name none).
pub fn formats_in(caps: &gst::CapsRef) -> Vec<VideoFormat> {
    let mut found = Vec::new();
    for structure in caps.iter() {
        let names: Vec<String> = match structure.value("format") {
            Err(_) => return SUPPORTED_FORMATS.to_vec(),
            Ok(value) => match (value.get::<String>(), value.get::<gst::List>()) {
                (Ok(name), _) => vec![name],
                (_, Ok(list)) => list.iter().filter_map(|v| v.get::<String>().ok()).collect(),
                _ => return SUPPORTED_FORMATS.to_vec(),
            },
        };
        found.extend(
            names
                .iter()
                .map(|n| VideoFormat::from_string(n))
                .filter(|f| SUPPORTED_FORMATS.contains(f)),
        );
    }
    found
}

/// Why a writer's `caps` are not what the elements carry (system-memory `video/x-raw` in one
/// of [`SUPPORTED_FORMATS`]), or `None` when they are. A segment's caps come from its writer,
/// which may not be shmframesink: memory features (`memory:DMABuf`) would make downstream
/// take system-memory buffers for something else.
pub fn refusal_of(caps: &gst::CapsRef) -> Option<String> {
    let structure = match caps.size() {
        1 => caps.structure(0)?,
        n => return Some(format!("{n} structures, not one")),
    };
    if structure.name() != "video/x-raw" {
        return Some(format!("media type {}, not video/x-raw", structure.name()));
    }
    if let Some(features) = caps.features(0)
        && !features.is_equal(&gst::CAPS_FEATURES_MEMORY_SYSTEM_MEMORY)
    {
        return Some(format!(
            "caps features {features}: frames in a segment are system memory"
        ));
    }
    match structure.get::<&str>("format") {
        Ok(format) if SUPPORTED_FORMATS.contains(&VideoFormat::from_string(format)) => None,
        Ok(format) => Some(format!(
            "format {format}, not one of {}",
            supported_format_names()
        )),
        Err(_) => Some("no single format".to_string()),
    }
}

/// Raw video caps with any of the supported formats and any size.
pub fn raw_video_caps() -> gst::Caps {
    gst_video::VideoCapsBuilder::new()
        .format_list(SUPPORTED_FORMATS.iter().copied())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        gst::init().unwrap();
        let s: Shape = "640x480".parse().unwrap();
        assert_eq!((s.width, s.height, s.format), (640, 480, None));
        let s: Shape = "1920x1080:RGBA".parse().unwrap();
        assert_eq!(s.format, Some(VideoFormat::Rgba));
        assert_eq!(s.to_string(), "1920x1080:RGBA");
        assert_eq!(s.slot_size(&[]), 1920 * 1080 * 4);
        let any: Shape = "16x16".parse().unwrap();
        assert_eq!(any.slot_size(&[]), 16 * 16 * 8);
        assert_eq!(any.slot_size(&[VideoFormat::Gray8]), 16 * 16);
        assert_eq!(
            any.slot_size(&[VideoFormat::Gray8, VideoFormat::Rgba]),
            16 * 16 * 4
        );
        // 8 bytes per pixel would not fit a slot: the largest format that does.
        let huge: Shape = "8192x8192".parse().unwrap();
        assert_eq!(huge.slot_size(&[]), 8192 * 8192 * 4);
    }

    #[test]
    fn refuses_bad_shapes_with_a_reason() {
        gst::init().unwrap();
        for (s, fragment) in [
            ("", "expected WIDTHxHEIGHT"),
            ("640", "expected WIDTHxHEIGHT"),
            ("0x480", "width \"0\""),
            ("640x-1", "height \"-1\""),
            ("99999x1", "width \"99999\""),
            ("640x480:NOPE", "\"NOPE\" is not a GstVideoFormat name"),
            (
                "64x48:v210",
                "shmframe does not carry v210; the formats it carries are RGB,",
            ),
        ] {
            let err = s.parse::<Shape>().unwrap_err();
            assert!(err.contains(fragment), "{s:?}: {err}");
        }
    }
}
