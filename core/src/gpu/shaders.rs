//! Registry of every WGSL file in `shaders/`, compiled into the binary.

use std::borrow::Cow;

use super::weights::QuantRows;
use crate::weight_format::WeightFormat;

/// One shader file.
#[derive(Clone, Copy, Debug)]
pub struct ShaderSource {
    /// File name without `.wgsl`.
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! shaders {
    ($($name:literal),* $(,)?) => {
        /// All shaders, by file name.
        pub const SHADERS: &[ShaderSource] = &[
            $(ShaderSource { name: $name, source: include_str!(concat!("../../../shaders/", $name, ".wgsl")) }),*
        ];
    };
}

shaders!(
    "attention",
    "attention_softmax",
    "attention_tiles",
    "attention_sg",
    "attention_vec4_sg",
    "columns_to_texture",
    "conv1d",
    "conv1d_vec4",
    "copy_rows",
    "dt",
    "embedding",
    "gated_rms_norm",
    "gated_rms_norm_vec4",
    "gated_rows_to_texture",
    "matmul",
    "matmul_sg",
    "matmul_xtex_sg",
    "matvec",
    "matvec_f16",
    "matvec_quant",
    "matvec_split_k",
    "matmul_tiles",
    "rms_norm",
    "rms_norm_vec4",
    "rows_to_texture",
    "rows_to_texture_vec4",
    "ssd_chunk_scan",
    "ssd_chunk_scan_sg",
    "ssd_chunk_scan_xtex_sg",
    "ssd_chunk_scan_tiles",
    "ssd_chunk_state",
    "ssd_chunk_state_sg",
    "ssd_chunk_state_xtex_sg",
    "ssd_chunk_state_tiles",
    "ssd_cumsum",
    "ssd_state_passing",
    "ssd_state_passing_sg",
    "ssm_sequential_scan",
    "ssm_step",
    "ssm_step_tex",
    "ssm_step_wide",
    "swiglu",
    "texture_to_rows",
);

/// Fragments the shaders include (`#include NAME`: `shaders/lib/NAME.wgsl`), not compiled alone.
macro_rules! libs {
    ($($name:literal),* $(,)?) => {
        const LIBS: &[ShaderSource] = &[
            $(ShaderSource { name: $name, source: include_str!(concat!("../../../shaders/lib/", $name, ".wgsl")) }),*
        ];
    };
}

libs!(
    "attention_params",
    "decode_product",
    "softplus",
    "ssd_params",
    "step_row",
    "step_tex_params",
);

/// The source of shader `name`, if registered.
pub fn shader_source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|s| s.name == name).map(|s| s.source)
}

/// How the kernels declare and read their weight texture `w` (read-only storage textures: on
/// lavapipe an image load is ~2x cheaper than a sampled-texture fetch): `w4(k4, r)` returns
/// `W[r, 4·k4 .. 4·k4 + 4]`. Every other format's variant declares an rgba32uint texture and
/// replaces `w4`'s body with one that unpacks the 4 values from the layout of
/// [`crate::gpu::weights`] (no shader-f16, no int8 feature needed).
const WEIGHT_DECLARATION: (&str, &str) = (
    "var w: texture_storage_2d<rgba32float, read>",
    "var w: texture_storage_2d<rgba32uint, read>",
);
const WEIGHT_F32_LOAD: &str = "    return textureLoad(w, vec2<i32>(k4, r));";

/// `w4` for packed halves: 8 per texel, two per u32, low half first.
const W4_F16: &str = "    let h = textureLoad(w, vec2<i32>(k4 >> 1u, r));
    let q = select(h.xy, h.zw, (k4 & 1) == 1);
    return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));";

/// `w4` for q8_0 superblocks of 128 weights in 9 texels: the 4 blocks' scales as f32 bits,
/// then 8 texels of codes, 4 i8 per u32 in weight order.
const W4_Q8_0: &str = "    let sb = (k4 >> 5) * 9;
    let j = k4 & 31;
    let d = bitcast<f32>(textureLoad(w, quant_texel(sb, r))[j >> 3]);
    let q = i32(textureLoad(w, quant_texel(sb + 1 + (j >> 2), r))[j & 3]);
    return vec4<f32>(vec4<i32>(extractBits(q, 0u, 8u), extractBits(q, 8u, 8u),
                               extractBits(q, 16u, 8u), extractBits(q, 24u, 8u))) * d;";

/// `w4` for q4_0 superblocks of 128 weights in 5 texels: the 4 blocks' scales as f32 bits,
/// then one texel per block, 8 codes per u32 (nibble n of word m: weight 8m + n), offset 8.
const W4_Q4_0: &str = "    let sb = (k4 >> 5) * 5;
    let j = k4 & 31;
    let d = bitcast<f32>(textureLoad(w, quant_texel(sb, r))[j >> 3]);
    let q = textureLoad(w, quant_texel(sb + 1 + (j >> 3), r))[(j >> 1) & 3] >> (u32(j & 1) * 16u);
    let c = vec4<u32>(q & 15u, (q >> 4u) & 15u, (q >> 8u) & 15u, (q >> 12u) & 15u);
    return (vec4<f32>(c) - 8.0) * d;";

/// `quant_texel(c, r)`: where texel c of row r of a quantized matrix lies ([`QuantRows`]),
/// appended to the quantized `w4` variants.
fn quant_texel(rows: QuantRows) -> &'static str {
    match rows {
        QuantRows::Plain => {
            "\nfn quant_texel(c: i32, r: i32) -> vec2<i32> {\n    return vec2<i32>(c, r);\n}\n"
        }
        QuantRows::Interleaved8 => {
            "\nfn quant_texel(c: i32, r: i32) -> vec2<i32> {\n    return vec2<i32>(8 * c + (r & 7), r >> 3);\n}\n"
        }
    }
}

/// The shader variants kernels name as `file#DEF...` (see [`preprocess`]); the naga test
/// validates each, as every plain file.
pub const DEFINED_VARIANTS: &[&str] = &["matvec_split_k#SUBGROUPS"];

/// Keeps the lines of `src` whose `#if NAME` / `#else` / `#endif` blocks (nestable, one
/// directive per line) are selected by `defs`, and replaces `#include NAME` by the fragment
/// `shaders/lib/NAME.wgsl` (itself preprocessed); `None` if the blocks do not balance, a
/// directive or fragment is unknown, or includes nest deeper than 4. The variants a kernel needs
/// that override constants cannot give (builtins only a feature provides) come from one file
/// this way, and code several kernels share (params, epilogues) is written once.
pub fn preprocess(src: &str, defs: &[&str]) -> Option<String> {
    preprocess_at(src, defs, 0)
}

fn preprocess_at(src: &str, defs: &[&str], depth: u32) -> Option<String> {
    let mut out = String::with_capacity(src.len());
    // Per open block: (this branch taken, the enclosing blocks all taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let live = |stack: &[(bool, bool)]| stack.last().is_none_or(|&(on, outer)| on && outer);
    for line in src.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("#if ") {
            let outer = live(&stack);
            stack.push((defs.contains(&rest.trim()), outer));
        } else if t.starts_with("#else") {
            let top = stack.last_mut()?;
            top.0 = !top.0;
        } else if t.starts_with("#endif") {
            stack.pop()?;
        } else if let Some(name) = t.strip_prefix("#include ") {
            if live(&stack) {
                let lib = LIBS.iter().find(|l| l.name == name.trim())?;
                if depth >= 4 {
                    return None;
                }
                out.push_str(&preprocess_at(lib.source, defs, depth + 1)?);
            }
        } else if t.starts_with('#') {
            return None;
        } else if live(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    stack.is_empty().then_some(out)
}

/// `src` as the device's WGSL compiler takes it: browsers require `enable subgroups;` before
/// any subgroup builtin, which naga (natively) does not parse yet.
pub fn for_target(src: Cow<'static, str>) -> Cow<'static, str> {
    let uses = [
        "@builtin(subgroup",
        "subgroupAdd(",
        "subgroupBroadcast",
        "subgroupShuffle",
    ];
    if cfg!(target_arch = "wasm32") && uses.iter().any(|u| src.contains(u)) {
        Cow::Owned(format!("enable subgroups;\n{src}"))
    } else {
        src
    }
}

/// Shader `name` (a file, or `file#DEF#DEF` for a [`preprocess`]ed variant) as compiled for
/// weight textures in `weights` (see [`WeightFormat`]), quantized rows laid as `rows`; kernels
/// with their own loop for one format (matvec_f16, matvec_quant) declare it so already and are
/// unchanged.
pub fn shader_variant(
    name: &str,
    weights: WeightFormat,
    rows: QuantRows,
) -> Option<Cow<'static, str>> {
    let mut parts = name.split('#');
    let src = shader_source(parts.next()?)?;
    let defs: Vec<&str> = parts.collect();
    let src: Cow<'static, str> = if defs.is_empty() && !src.contains("\n#") {
        Cow::Borrowed(src)
    } else {
        Cow::Owned(preprocess(src, &defs)?)
    };
    let body = match weights {
        WeightFormat::F32 => return Some(src),
        WeightFormat::F16 => W4_F16,
        WeightFormat::Q8_0 => W4_Q8_0,
        WeightFormat::Q4_0 => W4_Q4_0,
    };
    if !src.contains(WEIGHT_DECLARATION.0) {
        return Some(src);
    }
    let mut out = src
        .replace(WEIGHT_DECLARATION.0, WEIGHT_DECLARATION.1)
        .replace(WEIGHT_F32_LOAD, body);
    if weights.quant().is_some() {
        out.push_str(quant_texel(rows));
    }
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shader_parses_and_validates() {
        let mut failures = Vec::new();
        // Every variant: as written (f32 weights) and for f16, q8_0, q4_0 (rgba32uint) textures.
        let names = SHADERS
            .iter()
            .map(|s| s.name)
            .chain(DEFINED_VARIANTS.iter().copied());
        let variants = names.flat_map(|name| {
            [QuantRows::Plain, QuantRows::Interleaved8]
                .into_iter()
                .flat_map(move |rows| {
                    WeightFormat::ALL.map(|f| {
                        let src = shader_variant(name, f, rows).unwrap_or_default();
                        (name, (f, rows), src)
                    })
                })
        });
        for (name, f16, source) in variants {
            let module = match naga::front::wgsl::parse_str(&source) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{name} ({f16:?}): {}", e.emit_to_string(&source)));
                    continue;
                }
            };
            // The `*_sg` kernels use subgroup operations (only dispatched when the device has
            // them); everything else must validate without any capability but the f16 <-> f32
            // packing builtins (core WGSL; naga gates them for old GL targets).
            let base = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
            let caps = if name.ends_with("_sg") || name.contains("#SUBGROUPS") {
                base | naga::valid::Capabilities::SUBGROUP
            } else {
                base
            };
            let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
            v.subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                .subgroup_operations(naga::valid::SubgroupOperationSet::all());
            if let Err(e) = v.validate(&module) {
                failures.push(format!("{name} ({f16:?}): {}", e.emit_to_string(&source)));
            }
        }
        assert!(
            failures.is_empty(),
            "shader errors:\n{}",
            failures.join("\n")
        );
    }

    #[test]
    fn preprocessor_selects_blocks() {
        let src = "a\n#if X\nb\n#if Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf\n";
        assert_eq!(preprocess(src, &[]).as_deref(), Some("a\ne\nf\n"));
        assert_eq!(preprocess(src, &["X"]).as_deref(), Some("a\nb\nd\nf\n"));
        assert_eq!(
            preprocess(src, &["X", "Y"]).as_deref(),
            Some("a\nb\nc\nf\n")
        );
        assert_eq!(preprocess(src, &["Y"]).as_deref(), Some("a\ne\nf\n"));
        assert_eq!(preprocess("#if X\na\n", &[]), None, "unclosed");
        assert_eq!(preprocess("#endif\n", &[]), None, "unopened");
        assert_eq!(preprocess("#define x\n", &[]), None, "unknown directive");
        assert_eq!(
            preprocess("#include nothing\n", &[]),
            None,
            "unknown fragment"
        );
        let inc = preprocess("a\n#if X\n#include decode_product\n#endif\n", &[]).unwrap();
        assert_eq!(inc, "a\n", "an include in a dropped block is dropped");
        let inc = preprocess("#include decode_product\n", &[]).unwrap();
        assert!(inc.contains("fn conv_step(") && !inc.lines().any(|l| l.starts_with('#')));
        // A file with blocks compiles without its defines too, and a variant differs from it.
        let plain = shader_variant("matvec_split_k", WeightFormat::F32, QuantRows::Plain).unwrap();
        let sg = shader_variant(
            "matvec_split_k#SUBGROUPS",
            WeightFormat::F32,
            QuantRows::Plain,
        )
        .unwrap();
        assert!(!plain.contains("subgroupAdd(") && sg.contains("subgroupAdd("));
        assert!(!plain.contains("#if") && !sg.contains("#if") && plain.contains("fn store("));
    }

    #[test]
    fn every_wgsl_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("shaders/ directory") {
            let path = entry.expect("dir entry").path();
            if path.extension().and_then(|e| e.to_str()) == Some("wgsl") {
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_string();
                if shader_source(&stem).is_none() {
                    missing.push(stem);
                }
            }
        }
        assert!(missing.is_empty(), "not in SHADERS: {missing:?}");
    }
}
