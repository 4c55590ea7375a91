//! Image preprocessing that matches the Hugging Face image processors (PIL backend):
//! decode → EXIF orientation → RGB → resize (PIL-equivalent convolution filters, SIMD) →
//! centre crop → rescale → normalise, written straight into a CHW `f32` buffer.
//!
//! Limits are checked before any pixel buffer is allocated: the encoded size first, then the
//! dimensions read from the header, so a 50,000 × 50,000 PNG is refused after reading a few
//! bytes. Every refusal is an [`ImageError`] with a reason code.
//!
//! Tolerance against transformers (`CLIPImageProcessorPil`, `BlipImageProcessorPil`): resized
//! u8 pixels differ from PIL's by at most 1 level (fixed-point rounding), i.e. ≤ 0.016 after
//! CLIP normalisation; the parity test asserts that bound and a mean error below 0.002.

mod config;
mod jpeg_scaled;
pub(crate) mod pil;

pub use config::{ImageProcessorConfig, Resample, ResizeTarget};

use std::io::Cursor;

use fast_image_resize::{
    self as fr, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::error::ImageError;

/// Refusal limits for untrusted images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most encoded bytes accepted.
    pub max_encoded_bytes: usize,
    /// Most decoded pixels (width × height) accepted.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_encoded_bytes: 20 * 1024 * 1024,
            max_pixels: 40_000_000,
        }
    }
}

/// How to decode untrusted images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Refusal limits.
    pub limits: ImageLimits,
    /// Decode JPEGs at a reduced DCT scale (1/2, 1/4, 1/8) when the model needs at most half
    /// the source size (like PIL's `draft()`): several times faster on large photos, at the
    /// cost of a small deviation from the full-resolution path (see docs/model-runtime.md).
    pub jpeg_dct_scaling: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            limits: ImageLimits::default(),
            jpeg_dct_scaling: true,
        }
    }
}

/// A decoded RGB8 image (row-major, 3 bytes per pixel).
#[derive(Debug, Clone)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

/// Model-ready pixels: CHW `f32`, 3 channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// `3 * height * width` values, channel-major.
    pub data: Vec<f32>,
}

/// Formats accepted; anything else is `image_unsupported_format`.
const FORMATS: [ImageFormat; 5] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
];

/// Decode untrusted bytes into RGB8, applying EXIF orientation, within `limits`.
///
/// Alpha is dropped (as PIL's `convert("RGB")` does), palettes are expanded, 16-bit samples
/// are reduced to 8 bits, grayscale is replicated, GIF gives its first frame.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    decode_for(
        bytes,
        &DecodeOptions {
            limits: *limits,
            jpeg_dct_scaling: false,
        },
        None,
    )
}

/// Decode untrusted bytes as Pillow does: JPEGs with libjpeg-turbo (islow IDCT, fancy
/// upsampling: the worker's own JPEG decoder differs from it by about ±1 level per pixel,
/// which moves scores calibrated on Pillow's pixels and flips bits of perceptual hashes),
/// other formats — lossless, or decoded by the same library either way — with [`decode`].
/// Limits and EXIF orientation apply to both; a JPEG libjpeg-turbo refuses (CMYK, say) falls
/// back to [`decode`], whose error is the one reported.
pub fn decode_like_pillow(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    if check_encoded(bytes, limits)? == ImageFormat::Jpeg {
        if let Some(img) = jpeg_like_pillow(bytes, limits)? {
            return Ok(img);
        }
    }
    decode(bytes, limits)
}

/// A JPEG decoded by libjpeg-turbo with its defaults (islow IDCT, fancy upsampling), EXIF
/// orientation applied; `None` when libjpeg-turbo cannot (the caller uses the worker's
/// decoder). The caller has run [`check_encoded`]; the pixel limit is checked here from the
/// header, before decoding.
fn jpeg_like_pillow(bytes: &[u8], limits: &ImageLimits) -> Result<Option<RgbImage>, ImageError> {
    let Ok(header) = turbojpeg::read_header(bytes) else {
        return Ok(None);
    };
    if header.width as u64 * header.height as u64 > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            width: header.width as u32,
            height: header.height as u32,
            limit: limits.max_pixels,
        });
    }
    let Ok(img) = turbojpeg::decompress(bytes, turbojpeg::PixelFormat::RGB) else {
        return Ok(None);
    };
    let (w, h) = (img.width, img.height);
    let data = packed_rgb(img);
    let orientation =
        image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Jpeg)
            .into_decoder()
            .ok()
            .and_then(|mut d| image::ImageDecoder::orientation(&mut d).ok());
    let Some(buf) = image::RgbImage::from_raw(w as u32, h as u32, data) else {
        return Ok(None);
    };
    let mut dynamic = image::DynamicImage::ImageRgb8(buf);
    if let Some(o) = orientation {
        dynamic.apply_orientation(o);
    }
    let rgb = dynamic.into_rgb8();
    Ok(Some(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        data: rgb.into_raw(),
    }))
}

/// The RGB rows of a decoded image without the row padding libjpeg-turbo may add.
pub(crate) fn packed_rgb(img: turbojpeg::Image<Vec<u8>>) -> Vec<u8> {
    let row = img.width * 3;
    if img.pitch == row {
        return img.pixels;
    }
    img.pixels
        .chunks(img.pitch)
        .flat_map(|r| &r[..row])
        .copied()
        .collect()
}

/// The checks every decoder runs before decoding untrusted bytes: not empty, within
/// `max_encoded_bytes`, a supported format, and a JPEG with its end-of-image marker.
/// Returns the format.
pub fn check_encoded(bytes: &[u8], limits: &ImageLimits) -> Result<ImageFormat, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_encoded_bytes {
        return Err(ImageError::TooLarge {
            bytes: bytes.len(),
            limit: limits.max_encoded_bytes,
        });
    }
    let format = image::guess_format(bytes).map_err(|_| ImageError::UnsupportedFormat)?;
    if !FORMATS.contains(&format) {
        return Err(ImageError::UnsupportedFormat);
    }
    // zune-jpeg fills a truncated scan with grey instead of failing: refuse a JPEG without an
    // end-of-image marker. (FF D9 cannot occur inside entropy-coded data, where every FF is
    // stuffed or a restart marker; an embedded EXIF thumbnail can still hide truncation.)
    if format == ImageFormat::Jpeg && !bytes.windows(2).rev().any(|w| w == [0xFF, 0xD9]) {
        return Err(ImageError::Corrupt(
            "truncated JPEG: no end-of-image marker".into(),
        ));
    }
    Ok(format)
}

/// Decode like [`decode`], and when `need` is given (the (height, width) the models need for
/// a displayed image of (height, width)) and DCT scaling is on, decode JPEGs only as large as
/// needed.
pub fn decode_for(
    bytes: &[u8],
    opts: &DecodeOptions,
    need: Option<&dyn Fn(u32, u32) -> (u32, u32)>,
) -> Result<RgbImage, ImageError> {
    let limits = &opts.limits;
    let format = check_encoded(bytes, limits)?;
    if let (ImageFormat::Jpeg, true, Some(need)) = (format, opts.jpeg_dct_scaling, need) {
        if let Some(img) = jpeg_scaled::decode(bytes, limits, need)? {
            return Ok(img);
        }
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Defence in depth: the decoder itself also refuses oversized allocations.
    let mut lim = image::Limits::default();
    lim.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    reader.limits(lim);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt(format!(
            "zero-sized image {width}x{height}"
        )));
    }
    if width as u64 * height as u64 > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => ImageError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        },
        other => ImageError::Corrupt(other.to_string()),
    })?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let rgb = match img {
        DynamicImage::ImageRgb8(buf) => buf,
        other => other.to_rgb8(),
    };
    Ok(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        data: rgb.into_raw(),
    })
}

/// Preprocessor of one model input: a processor config plus a reusable resizer.
#[derive(Debug)]
pub struct Preprocessor {
    config: ImageProcessorConfig,
}

impl Preprocessor {
    /// A preprocessor for `config`.
    pub fn new(config: ImageProcessorConfig) -> Self {
        Self { config }
    }

    /// The processor settings.
    pub fn config(&self) -> &ImageProcessorConfig {
        &self.config
    }

    /// Resize, crop, rescale and normalise a decoded image.
    pub fn apply(&self, img: &RgbImage) -> Result<Pixels, ImageError> {
        let c = &self.config;
        let (rh, rw) = c.resized_size(img.height, img.width);
        let resized;
        let (src, sw, sh): (&[u8], u32, u32) = if (rh, rw) == (img.height, img.width) {
            (&img.data, img.width, img.height)
        } else {
            resized = resize(img, rw, rh, c.resample)?;
            (&resized, rw, rh)
        };
        let (oh, ow) = c.crop.unwrap_or((sh, sw));
        let top = (sh as i64 - oh as i64).div_euclid(2);
        let left = (sw as i64 - ow as i64).div_euclid(2);
        let scale = c.rescale;
        let (mean, std) = c.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        // One lookup table per channel: u8 value → final f32, computed as transformers does
        // (rescale in f64, then cast to f32, then normalise in f32).
        let mut lut = [[0f32; 256]; 3];
        for (ch, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                let x = match scale {
                    Some(s) => (v as f64 * s) as f32,
                    None => v as f32,
                };
                *out = if c.normalize.is_some() {
                    (x - mean[ch]) / std[ch]
                } else {
                    x
                };
            }
        }
        let (oh, ow) = (oh as usize, ow as usize);
        let plane = oh * ow;
        let mut data = vec![0f32; 3 * plane];
        for y in 0..oh {
            let sy = y as i64 + top;
            for x in 0..ow {
                let sx = x as i64 + left;
                let i = y * ow + x;
                if sy < 0 || sy >= sh as i64 || sx < 0 || sx >= sw as i64 {
                    // transformers pads a too-small crop with zeros before rescaling.
                    for ch in 0..3 {
                        data[ch * plane + i] = lut[ch][0];
                    }
                    continue;
                }
                let p = (sy as usize * sw as usize + sx as usize) * 3;
                for ch in 0..3 {
                    data[ch * plane + i] = lut[ch][src[p + ch] as usize];
                }
            }
        }
        Ok(Pixels {
            height: oh,
            width: ow,
            data,
        })
    }
}

/// Resize like PIL: horizontal pass first (to an 8-bit intermediate, clipped), then vertical.
/// fast_image_resize does the vertical pass first for 8-bit images when both axes change,
/// which clips overshoot at different places and differs from PIL by up to 15 levels on
/// hard 0/255 edges; two single-axis passes in PIL's order stay within 1–2 levels.
fn resize(
    img: &RgbImage,
    width: u32,
    height: u32,
    resample: Resample,
) -> Result<Vec<u8>, ImageError> {
    let alg = match resample {
        Resample::Nearest => ResizeAlg::Nearest,
        Resample::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        Resample::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
        Resample::Lanczos => ResizeAlg::Convolution(FilterType::Lanczos3),
    };
    let opts = ResizeOptions::new().resize_alg(alg);
    let mut resizer = Resizer::new();
    let mut pass =
        |data: &[u8], sw: u32, sh: u32, dw: u32, dh: u32| -> Result<Vec<u8>, ImageError> {
            let src = ImageRef::new(sw, sh, data, PixelType::U8x3)
                .map_err(|e| ImageError::Corrupt(e.to_string()))?;
            let mut dst = fr::images::Image::new(dw, dh, PixelType::U8x3);
            resizer
                .resize(&src, &mut dst, &opts)
                .map_err(|e| ImageError::Corrupt(format!("resize: {e}")))?;
            Ok(dst.into_vec())
        };
    if width != img.width && height != img.height && resample != Resample::Nearest {
        let tmp = pass(&img.data, img.width, img.height, width, img.height)?;
        pass(&tmp, width, img.height, width, height)
    } else {
        pass(&img.data, img.width, img.height, width, height)
    }
}
