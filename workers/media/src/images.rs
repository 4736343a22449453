//! Image decoding under explicit limits, thumbnails with fast_image_resize, and re-encoding (which drops EXIF and other metadata).
//!
//! Everything here is CPU work: callers run it in `spawn_blocking`, behind `catch_unwind`,
//! because image's changelog warns that decoders can panic on hostile input.

use std::io::Cursor;

use fast_image_resize::images::Image;
use fast_image_resize::{IntoImageView, ResizeOptions, Resizer};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{DynamicImage, ImageEncoder, ImageFormat, ImageReader};

/// Bounds on what a decoder may allocate; the PNG bomb test depends on these being set.
#[derive(Debug, Clone)]
pub struct ImageLimits {
    pub max_width: u32,
    pub max_height: u32,
    /// Bytes one decode may allocate.
    pub max_alloc: u64,
    /// Long side of a thumbnail, in pixels.
    pub thumbnail_long_side: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits { max_width: 12_000, max_height: 12_000, max_alloc: 256 * 1024 * 1024, thumbnail_long_side: 320 }
    }
}

/// An encoded image ready to serve.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

pub struct ProcessedImage {
    /// The upload re-encoded without its metadata.
    pub original: Encoded,
    pub thumbnail: Encoded,
}

/// Decodes, strips and thumbnails; `Err` carries the reason shown to the uploader.
pub fn process_image(content: &[u8], limits: &ImageLimits) -> Result<ProcessedImage, String> {
    let mut reader = ImageReader::new(Cursor::new(content)).with_guessed_format().map_err(|error| format!("unreadable image: {error}"))?;
    let format = reader.format().ok_or_else(|| "not a recognised image format".to_owned())?;
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    decoder_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(decoder_limits);
    let decoded = reader.decode().map_err(|error| format!("image refused: {error}"))?;
    // Two pixel layouts cover every input: RGBA when there is transparency (served as PNG), RGB otherwise.
    let decoded = if decoded.color().has_alpha() { DynamicImage::ImageRgba8(decoded.into_rgba8()) } else { DynamicImage::ImageRgb8(decoded.into_rgb8()) };
    let keep_jpeg = format == ImageFormat::Jpeg && !decoded.color().has_alpha();
    let original = encode(&decoded, keep_jpeg)?;
    let thumbnail = encode(&thumbnail(&decoded, limits.thumbnail_long_side)?, !decoded.color().has_alpha())?;
    Ok(ProcessedImage { original, thumbnail })
}

/// The thumbnail's size: the long side scaled to `long_side`, never upscaled, at least one pixel.
pub fn thumbnail_size(width: u32, height: u32, long_side: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= long_side {
        return (width, height);
    }
    let scale = |side: u32| ((u64::from(side) * u64::from(long_side) + u64::from(long) / 2) / u64::from(long)).max(1) as u32;
    (scale(width), scale(height))
}

fn thumbnail(source: &DynamicImage, long_side: u32) -> Result<DynamicImage, String> {
    let (width, height) = thumbnail_size(source.width(), source.height(), long_side);
    let pixel_type = source.pixel_type().ok_or_else(|| "unsupported pixel type".to_owned())?;
    let mut target = Image::new(width, height, pixel_type);
    Resizer::new().resize(source, &mut target, &ResizeOptions::new()).map_err(|error| format!("thumbnail failed: {error}"))?;
    let buffer = target.into_vec();
    let resized = if source.color().has_alpha() {
        image::RgbaImage::from_raw(width, height, buffer).map(DynamicImage::ImageRgba8)
    } else {
        image::RgbImage::from_raw(width, height, buffer).map(DynamicImage::ImageRgb8)
    };
    resized.ok_or_else(|| "thumbnail buffer has the wrong size".to_owned())
}

fn encode(image: &DynamicImage, as_jpeg: bool) -> Result<Encoded, String> {
    let mut bytes = Vec::new();
    let (width, height) = (image.width(), image.height());
    let result = if as_jpeg {
        JpegEncoder::new_with_quality(&mut bytes, 88).write_image(image.as_bytes(), width, height, image.color().into())
    } else {
        PngEncoder::new(&mut bytes).write_image(image.as_bytes(), width, height, image.color().into())
    };
    result.map_err(|error| format!("re-encoding failed: {error}"))?;
    Ok(Encoded { bytes, content_type: if as_jpeg { "image/jpeg" } else { "image/png" }, width, height })
}

/// Whether a declared content type goes through decoding and thumbnailing.
pub fn is_image(content_type: &str) -> bool {
    matches!(content_type, "image/jpeg" | "image/png" | "image/gif" | "image/webp")
}

#[cfg(test)]
mod tests {
    use super::thumbnail_size;

    fn check(input: (u32, u32), expected: (u32, u32)) {
        assert_eq!(thumbnail_size(input.0, input.1, 320), expected, "{input:?}");
    }

    #[test]
    fn thumbnails_keep_the_aspect_ratio() {
        check((1600, 1200), (320, 240));
        check((1200, 1600), (240, 320));
        check((100, 50), (100, 50));
        check((10_000, 1), (320, 1));
    }
}
