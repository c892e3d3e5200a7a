//! Reader for the IDX format of MNIST and Fashion-MNIST (LeCun's `idx3-ubyte` / `idx1-ubyte`).
//!
//! Big-endian: images start `00 00 08 03`, then u32 count, rows, cols and `count*rows*cols`
//! u8 pixels; labels start `00 00 08 01`, then u32 count and `count` u8 labels. Files may be
//! gzipped (Fashion-MNIST ships them that way); the gzip magic decides.

use std::io::Read;
use std::path::Path;

use crate::DataError;

/// Images of one IDX file, row-major, one byte per pixel.
#[derive(Debug, Clone)]
pub struct IdxImages {
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl IdxImages {
    pub fn len(&self) -> usize {
        self.pixels.len() / (self.rows * self.cols)
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = DataError::read(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // Bounded: a small file can decompress to anything.
        flate2::read::GzDecoder::new(&raw[..])
            .take(crate::MAX_FILE_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| DataError::corrupt(path, format!("not a valid gzip stream ({e})")))?;
        if out.len() as u64 > crate::MAX_FILE_BYTES {
            return Err(DataError::corrupt(
                path,
                format!(
                    "decompresses to more than {} bytes, the most a data file may hold",
                    crate::MAX_FILE_BYTES
                ),
            ));
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> usize {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
}

/// Parses an image file (`idx3-ubyte`) from its decompressed bytes.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages, DataError> {
    if bytes.len() < 16 || bytes[..4] != [0, 0, 8, 3] {
        return Err(DataError::corrupt(
            path,
            "not an IDX image file (expected magic 00 00 08 03 and a 16-byte header)",
        ));
    }
    let (count, rows, cols) = (be_u32(bytes, 4), be_u32(bytes, 8), be_u32(bytes, 12));
    if rows == 0 || cols == 0 {
        return Err(DataError::corrupt(
            path,
            format!("image size {rows}x{cols} is empty"),
        ));
    }
    let expected = 16 + count * rows * cols;
    if bytes.len() != expected {
        return Err(DataError::corrupt(
            path,
            format!(
                "header promises {count} images of {rows}x{cols} ({expected} bytes) but the file \
                 has {} bytes (truncated?)",
                bytes.len()
            ),
        ));
    }
    Ok(IdxImages {
        rows,
        cols,
        pixels: bytes[16..].to_vec(),
    })
}

/// Parses a label file (`idx1-ubyte`) from its decompressed bytes.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    if bytes.len() < 8 || bytes[..4] != [0, 0, 8, 1] {
        return Err(DataError::corrupt(
            path,
            "not an IDX label file (expected magic 00 00 08 01 and an 8-byte header)",
        ));
    }
    let count = be_u32(bytes, 4);
    if bytes.len() != 8 + count {
        return Err(DataError::corrupt(
            path,
            format!(
                "header promises {count} labels but the file has {} (truncated?)",
                bytes.len() - 8
            ),
        ));
    }
    Ok(bytes[8..].to_vec())
}

/// Encodes images as an IDX file; the inverse of [`parse_images`] (used by tests and tools).
pub fn encode_images(images: &IdxImages) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 3];
    for v in [images.len(), images.rows, images.cols] {
        out.extend_from_slice(&(v as u32).to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    out
}

/// Encodes labels as an IDX file; the inverse of [`parse_labels`].
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 1];
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let images = IdxImages {
            rows: 2,
            cols: 3,
            pixels: (0..12).collect(),
        };
        let path = Path::new("x");
        let back = parse_images(&encode_images(&images), path).unwrap();
        assert_eq!(back.pixels, images.pixels);
        assert_eq!((back.rows, back.cols, back.len()), (2, 3, 2));
        assert_eq!(
            parse_labels(&encode_labels(&[1, 2, 3]), path).unwrap(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn truncated_and_wrong_magic_are_errors() {
        let images = IdxImages {
            rows: 2,
            cols: 2,
            pixels: vec![0; 8],
        };
        let mut bytes = encode_images(&images);
        bytes.pop();
        let err = parse_images(&bytes, Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = parse_labels(&bytes, Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an IDX label file"), "{err}");
    }
}
