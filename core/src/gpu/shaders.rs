//! Registry of every WGSL file in `shaders/`, compiled into the binary.

use std::borrow::Cow;

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
    "rms_norm",
    "rms_norm_vec4",
    "rows_to_texture",
    "rows_to_texture_vec4",
    "ssd_chunk_scan",
    "ssd_chunk_scan_sg",
    "ssd_chunk_scan_xtex_sg",
    "ssd_chunk_state",
    "ssd_chunk_state_sg",
    "ssd_chunk_state_xtex_sg",
    "ssd_cumsum",
    "ssd_state_passing",
    "ssd_state_passing_sg",
    "ssm_sequential_scan",
    "ssm_step",
    "ssm_step_tex",
    "swiglu",
    "texture_to_rows",
);

/// The source of shader `name`, if registered.
pub fn shader_source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|s| s.name == name).map(|s| s.source)
}

/// How the kernels declare and read their weight texture `w` (read-only storage textures: on
/// lavapipe an image load is ~2x cheaper than a sampled-texture fetch), and what the f16
/// variant puts instead: an rgba32uint texture of packed halves (8 per texel), `w4` unpacking
/// the 4 it is asked for (no shader-f16 needed).
const WEIGHT_F16_EDITS: [(&str, &str); 2] = [
    (
        "var w: texture_storage_2d<rgba32float, read>",
        "var w: texture_storage_2d<rgba32uint, read>",
    ),
    (
        "    return textureLoad(w, vec2<i32>(k4, r));",
        "    let h = textureLoad(w, vec2<i32>(k4 >> 1u, r));
    let q = select(h.xy, h.zw, (k4 & 1) == 1);
    return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));",
    ),
];

/// Shader `name` as compiled: with `f16`, its weight texture holds packed halves (see
/// [`crate::gpu::weights::WeightFormat::F16`]); kernels with their own f16 loop (matvec_f16)
/// declare it so already and are unchanged.
pub fn shader_variant(name: &str, f16: bool) -> Option<Cow<'static, str>> {
    let src = shader_source(name)?;
    if !f16 || !src.contains(WEIGHT_F16_EDITS[0].0) {
        return Some(Cow::Borrowed(src));
    }
    let mut s = src.to_string();
    for (a, b) in WEIGHT_F16_EDITS {
        s = s.replace(a, b);
    }
    Some(Cow::Owned(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shader_parses_and_validates() {
        let mut failures = Vec::new();
        // Both variants: as written (f32 weights) and with packed-f16 (rgba32uint) weight textures.
        let variants = SHADERS.iter().flat_map(|s| {
            [false, true].map(|f16| (s.name, f16, shader_variant(s.name, f16).unwrap_or_default()))
        });
        for (name, f16, source) in variants {
            let module = match naga::front::wgsl::parse_str(&source) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{name} (f16 {f16}): {}", e.emit_to_string(&source)));
                    continue;
                }
            };
            // The `*_sg` kernels use subgroup operations (only dispatched when the device has
            // them); everything else must validate without any capability but the f16 <-> f32
            // packing builtins (core WGSL; naga gates them for old GL targets).
            let base = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
            let caps = if name.ends_with("_sg") {
                base | naga::valid::Capabilities::SUBGROUP
            } else {
                base
            };
            let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
            v.subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                .subgroup_operations(naga::valid::SubgroupOperationSet::all());
            if let Err(e) = v.validate(&module) {
                failures.push(format!("{name} (f16 {f16}): {}", e.emit_to_string(&source)));
            }
        }
        assert!(
            failures.is_empty(),
            "shader errors:\n{}",
            failures.join("\n")
        );
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
