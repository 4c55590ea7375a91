//! JPEG decoding at a reduced DCT scale (1/2, 1/4, 1/8) when the model needs far fewer pixels
//! than the file has — what PIL's `draft()` does. A 4000×3000 photo bound for 224×224 is
//! decoded straight to 500×375: the inverse DCT of each 8×8 block computes only the
//! frequencies that survive, which is most of the decode time saved.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageBuffer};
use jpeg_decoder::{Decoder, PixelFormat};

use super::{ImageLimits, RgbImage};
use crate::error::ImageError;

/// Scale in the DCT domain only when the source is at least this many times the size needed.
/// jpeg-decoder's entropy decoding is slower than zune-jpeg's full decode, so a 1/2 scale
/// loses (640×480 → CLIP 224: 342 img/s scaled vs 426 full, one core); from 1/4 on it wins
/// (4000×3000: 23 vs 12.5 img/s). See benches/README.md.
const MIN_REDUCTION: u32 = 4;

/// Decode `bytes` (a JPEG) so that, after EXIF orientation, the image is at least `need`
/// (height, width) of the displayed image, scaling in the DCT domain when that halves the
/// size at least once. Returns `None` when no scaling applies (the caller decodes normally).
/// Long: header, orientation, scale choice and the colour conversion of each JPEG colour
/// type in one pass over the decoder's output.
pub(super) fn decode(
    bytes: &[u8],
    limits: &ImageLimits,
    need: &dyn Fn(u32, u32) -> (u32, u32),
) -> Result<Option<RgbImage>, ImageError> {
    let mut dec = Decoder::new(Cursor::new(bytes));
    dec.read_info()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let info = dec
        .info()
        .ok_or_else(|| ImageError::Corrupt("no JPEG frame header".into()))?;
    let (sw, sh) = (info.width as u32, info.height as u32);
    if sw == 0 || sh == 0 {
        return Err(ImageError::Corrupt(format!("zero-sized image {sw}x{sh}")));
    }
    if sw as u64 * sh as u64 > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            width: sw,
            height: sh,
            limit: limits.max_pixels,
        });
    }
    let orientation = dec.exif_data().and_then(exif_orientation).unwrap_or(1);
    let transposed = matches!(orientation, 5..=8);
    let (dh, dw) = if transposed { (sw, sh) } else { (sh, sw) };
    let (nh, nw) = need(dh, dw);
    let (need_w, need_h) = if transposed { (nh, nw) } else { (nw, nh) };
    if sw < MIN_REDUCTION * need_w.max(1) || sh < MIN_REDUCTION * need_h.max(1) {
        return Ok(None);
    }
    let (w, h) = dec
        .scale(
            need_w.min(u16::MAX as u32) as u16,
            need_h.min(u16::MAX as u32) as u16,
        )
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let raw = dec
        .decode()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let (w, h) = (w as u32, h as u32);
    let n = w as usize * h as usize;
    let rgb: Vec<u8> = match info.pixel_format {
        PixelFormat::RGB24 => raw,
        PixelFormat::L8 => raw.iter().flat_map(|&v| [v, v, v]).collect(),
        PixelFormat::L16 => raw
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        // jpeg-decoder returns true CMYK (0 = no ink); PIL's conversion: (255-c)(255-k)/255.
        PixelFormat::CMYK32 => raw
            .chunks_exact(4)
            .flat_map(|p| {
                let nk = 255 - p[3] as u32;
                let f = |c: u8| (((255 - c as u32) * nk + 127) / 255) as u8;
                [f(p[0]), f(p[1]), f(p[2])]
            })
            .collect(),
    };
    if rgb.len() != n * 3 {
        return Err(ImageError::Corrupt(
            "JPEG decoded to an unexpected size".into(),
        ));
    }
    let Some(o) = Orientation::from_exif(orientation).filter(|_| orientation != 1) else {
        return Ok(Some(RgbImage {
            width: w,
            height: h,
            data: rgb,
        }));
    };
    let buf =
        ImageBuffer::from_raw(w, h, rgb).ok_or_else(|| ImageError::Corrupt("bad buffer".into()))?;
    let mut img = DynamicImage::ImageRgb8(buf);
    img.apply_orientation(o);
    let out = img.into_rgb8();
    Ok(Some(RgbImage {
        width: out.width(),
        height: out.height(),
        data: out.into_raw(),
    }))
}

/// The orientation tag (0x0112) of an EXIF block (`Exif\0\0` optional, then TIFF).
fn exif_orientation(exif: &[u8]) -> Option<u8> {
    let tiff = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    let le = match tiff.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b = tiff.get(o..o + 2)?;
        Some(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b = tiff.get(o..o + 4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    };
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    (0..count.min(256)).find_map(|i| {
        let e = ifd + 2 + i * 12;
        (u16_at(e)? == 0x0112)
            .then(|| u16_at(e + 8))
            .flatten()
            .map(|v| v as u8)
    })
}

#[cfg(test)]
mod tests {
    use super::exif_orientation;

    #[test]
    fn reads_the_orientation_tag_in_both_byte_orders() {
        // TIFF header, IFD at 8 with one entry: tag 0x0112, type SHORT, count 1, value 6.
        let le = b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0";
        assert_eq!(exif_orientation(le), Some(6));
        let be = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x03\0\0\0\0\0\0";
        assert_eq!(exif_orientation(be), Some(3));
        assert_eq!(exif_orientation(b"garbage"), None);
    }
}
