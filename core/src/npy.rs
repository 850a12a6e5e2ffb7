//! The `.npy` format for f32 arrays: logits out of `tm-run forward`, golden logits in.

use crate::error::{Error, Result};

/// The `.npy` header (magic, version, length, dict) for a C-order little-endian f32 array.
fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let shape_txt = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// Serialises a C-order little-endian f32 array.
pub fn to_npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let mut out = npy_header(shape);
    out.reserve(4 * data.len());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Streams a C-order little-endian f32 array as `.npy` into `w` without a second copy of it
/// (long inputs' logits are large).
pub fn write_npy_f32(
    w: &mut impl std::io::Write,
    shape: &[usize],
    data: &[f32],
) -> std::io::Result<()> {
    w.write_all(&npy_header(shape))?;
    let mut chunk = Vec::with_capacity(4 * 4096);
    for block in data.chunks(4096) {
        chunk.clear();
        for v in block {
            chunk.extend_from_slice(&v.to_le_bytes());
        }
        w.write_all(&chunk)?;
    }
    w.flush()
}

/// Parses a C-order little-endian f32 `.npy` (format versions 1–3) into (shape, data).
pub fn from_npy_f32(bytes: &[u8], name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let bad = |reason: &str| Error::Safetensors {
        file: name.to_string(),
        reason: format!("not a float32 .npy file: {reason}"),
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unknown version")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(bad("expected '<f4' in C order"));
    }
    let shape_txt = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("bad shape")))
        .collect::<Result<Vec<_>>>()?;
    let body = &bytes[start + header_len..];
    let n: usize = shape.iter().product();
    if body.len() != 4 * n {
        return Err(bad("data length does not match the shape"));
    }
    let data = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip() {
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let bytes = to_npy_f32(&[2, 3], &data);
        assert_eq!(
            (bytes.len() - 4 * data.len()) % 64,
            0,
            "header padded to 64 bytes"
        );
        assert_eq!(from_npy_f32(&bytes, "t").unwrap(), (vec![2, 3], data));
        assert!(from_npy_f32(&bytes[..bytes.len() - 1], "t").is_err());
    }
}
