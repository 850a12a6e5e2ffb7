//! Registry of every WGSL file in `shaders/`, compiled into the binary.

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
    "attention_sg",
    "attention_vec4_sg",
    "conv1d",
    "copy_rows",
    "dt",
    "embedding",
    "gated_rms_norm",
    "matmul",
    "matmul_sg",
    "matvec",
    "matvec_sg",
    "rms_norm",
    "ssd_chunk_scan",
    "ssd_chunk_scan_sg",
    "ssd_chunk_state",
    "ssd_chunk_state_sg",
    "ssd_cumsum",
    "ssd_state_passing",
    "ssd_state_passing_sg",
    "ssm_sequential_scan",
    "ssm_step",
    "ssm_step_sg",
    "ssm_step_vec4",
    "swiglu",
);

/// The source of shader `name`, if registered.
pub fn shader_source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|s| s.name == name).map(|s| s.source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shader_parses_and_validates() {
        let mut failures = Vec::new();
        for s in SHADERS {
            let module = match naga::front::wgsl::parse_str(s.source) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{}: {}", s.name, e.emit_to_string(s.source)));
                    continue;
                }
            };
            // The `*_sg` kernels use subgroup operations (only dispatched when the device has
            // them); everything else must validate without any capability.
            let caps = if s.name.ends_with("_sg") {
                naga::valid::Capabilities::SUBGROUP
            } else {
                naga::valid::Capabilities::empty()
            };
            let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
            v.subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                .subgroup_operations(naga::valid::SubgroupOperationSet::all());
            if let Err(e) = v.validate(&module) {
                failures.push(format!("{}: {}", s.name, e.emit_to_string(s.source)));
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
