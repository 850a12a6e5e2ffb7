//! Compiled pipelines (keyed by kernel, variant and weight format), bind-group layouts, the
//! cached bind groups and the params arena.

use super::*;

/// A compute entry point and the access mode of its bindings 1.. ('r' read-only storage,
/// 'w' read-write storage, 'u' a uniform buffer ([`GpuContext::uniform_staging`]), 'x' / 'o'
/// an rgba32float storage texture read-only / write-only ([`GpuContext::x_texture`]), 't' a
/// read-only storage texture of weights: rgba32float, or packed f16 (rgba32uint) in the
/// shader's f16 variant, see [`crate::gpu::shaders::shader_variant`]); binding 0 is always the
/// params uniform with a dynamic offset.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernel {
    pub shader: &'static str,
    pub entry: &'static str,
    pub access: &'static str,
    /// Pipeline-overridable constants, "NAME=value;NAME=value" ("" for none).
    pub spec: &'static str,
}

impl Kernel {
    /// `self` specialised for state sizes N = 32, 64, 128 through the overridable constant
    /// `N4` = N / 4 (constant trip counts let the compiler unroll and keep arrays in registers);
    /// pick one with [`Kernel::for_key`].
    pub(crate) const fn by_state_size(self) -> [(u32, Kernel); 3] {
        [
            (
                32,
                Kernel {
                    spec: "N4=8",
                    ..self
                },
            ),
            (
                64,
                Kernel {
                    spec: "N4=16",
                    ..self
                },
            ),
            (
                128,
                Kernel {
                    spec: "N4=32",
                    ..self
                },
            ),
        ]
    }

    /// The entry of `table` for `key`, else `self` (the unspecialised kernel).
    pub(crate) fn for_key<'a>(&'a self, table: &'a [(u32, Kernel)], key: u32) -> &'a Kernel {
        table
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(self, |(_, k)| k)
    }
}

/// Size of [`GpuContext::uniform_staging`] (the shaders declare `array<vec4<f32>, 4096>`).
pub(crate) const UNIFORM_STAGING_BYTES: u64 = 65536;

pub(crate) struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub access: &'static str,
    pub name: &'static str,
    /// The weight format its 't' bindings hold (f32: rgba32float; f16, q8_0, q4_0: rgba32uint
    /// words, see [`crate::gpu::shaders::shader_variant`]).
    pub weights: WeightFormat,
}

/// A compiled pipeline's identity: the kernel (shader file or `file#DEF` variant, entry point,
/// override constants) and the format of the weight textures it binds.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) struct PipelineKey {
    shader: &'static str,
    entry: &'static str,
    spec: &'static str,
    weights: WeightFormat,
}

impl std::fmt::Display for PipelineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.shader, self.entry)?;
        if !self.spec.is_empty() {
            write!(f, " [{}]", self.spec)?;
        }
        write!(f, " ({} weights)", self.weights.name())
    }
}

/// A cached bind group's identity: layout, arena generation and the buffers bound.
#[derive(Hash, PartialEq, Eq)]
pub(super) struct BindKey {
    access: &'static str,
    weights: WeightFormat,
    arena: u64,
    pub(super) buffers: Vec<u64>,
}

pub(crate) struct Arena {
    pub buffer: wgpu::Buffer,
    pub capacity: u64,
    pub generation: u64,
}

impl GpuContext {
    /// The (cached) pipeline for `k`, in its variant for `weights` textures.
    pub(crate) fn pipeline(&self, k: &Kernel, weights: WeightFormat) -> GpuResult<Arc<Pipeline>> {
        let key = PipelineKey {
            shader: k.shader,
            entry: k.entry,
            spec: k.spec,
            weights,
        };
        let mut st = lock(&self.state);
        if let Some(p) = st.pipelines.get(&key) {
            return Ok(p.clone());
        }
        if let std::collections::hash_map::Entry::Vacant(e) = st.modules.entry((k.shader, weights))
        {
            let src = shader_variant(k.shader, weights, self.plan().quant_rows())
                .ok_or_else(|| GpuError::Unsupported(format!("no shader named {}", k.shader)))?;
            let src = for_target(src);
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(k.shader),
                source: wgpu::ShaderSource::Wgsl(src),
            };
            let m = if self.unchecked_shaders {
                // SAFETY: opted in via GpuOptions::unchecked_shaders; every op checks its
                // views against the buffer lengths before dispatching, and the kernels only
                // index inside those views (see the shader headers).
                unsafe {
                    self.device
                        .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
                }
            } else {
                self.device.create_shader_module(desc)
            };
            e.insert(m);
        }
        st.layouts
            .entry((k.access, weights))
            .or_insert_with(|| self.make_layout(k.access, weights));
        let constants: Vec<(&str, f64)> = k
            .spec
            .split(';')
            .filter_map(|kv| {
                let (a, b) = kv.split_once('=')?;
                Some((a.trim(), b.trim().parse::<f64>().ok()?))
            })
            .collect();
        let (module, layout) = match (
            st.modules.get(&(k.shader, weights)),
            st.layouts.get(&(k.access, weights)),
        ) {
            (Some(m), Some((_, l))) => (m, l),
            _ => return Err(GpuError::Unsupported(format!("pipeline {key}"))),
        };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.shader),
                layout: Some(layout),
                module,
                entry_point: Some(k.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(m) = lock(&self.error).take() {
            return Err(GpuError::Validation(format!("pipeline {key}: {m}")));
        }
        // Send + Sync everywhere but the browser's threaded module (wasm `+atomics`), where
        // wgpu's web types are neither; the npm worker never runs the GPU engine on that module.
        #[cfg_attr(
            all(target_arch = "wasm32", target_feature = "atomics"),
            allow(clippy::arc_with_non_send_sync)
        )]
        let p = Arc::new(Pipeline {
            pipeline,
            access: k.access,
            name: k.shader,
            weights,
        });
        st.pipelines.insert(key, p.clone());
        Ok(p)
    }

    fn make_layout(
        &self,
        access: &str,
        weights: WeightFormat,
    ) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: NonZeroU64::new(PARAM_SLOT),
            },
            count: None,
        }];
        for (i, c) in access.chars().enumerate() {
            let image = |access, format: WeightFormat| wgpu::BindingType::StorageTexture {
                access,
                format: texture_format(format),
                view_dimension: wgpu::TextureViewDimension::D2,
            };
            let buffer = |ty| wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            };
            let ty = match c {
                't' => image(wgpu::StorageTextureAccess::ReadOnly, weights),
                'x' => image(wgpu::StorageTextureAccess::ReadOnly, WeightFormat::F32),
                'o' => image(wgpu::StorageTextureAccess::WriteOnly, WeightFormat::F32),
                'u' => buffer(wgpu::BufferBindingType::Uniform),
                _ => buffer(wgpu::BufferBindingType::Storage {
                    read_only: c == 'r',
                }),
            };
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty,
                count: None,
            });
        }
        let bgl = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(access),
                entries: &entries,
            });
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(access),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
        (bgl, pl)
    }

    /// Makes sure the uniform arena holds `bytes`; returns its buffer and generation.
    pub(crate) fn arena(&self, bytes: u64) -> (wgpu::Buffer, u64) {
        let mut st = lock(&self.state);
        let need = bytes.max(PARAM_SLOT);
        let grow = st.arena.as_ref().is_none_or(|a| a.capacity < need);
        if grow {
            let capacity = need.next_power_of_two().max(64 * PARAM_SLOT);
            let generation = st.arena.as_ref().map_or(0, |a| a.generation + 1);
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params arena"),
                size: capacity,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            st.bind_groups.clear();
            st.arena = Some(Arena {
                buffer,
                capacity,
                generation,
            });
        }
        match &st.arena {
            Some(a) => (a.buffer.clone(), a.generation),
            None => unreachable!("arena was just created"),
        }
    }

    /// The cached bind group for `pipe` with `buffers` at bindings 1.. (whole buffers).
    pub(crate) fn bind_group(
        &self,
        pipe: &Pipeline,
        arena: &wgpu::Buffer,
        generation: u64,
        buffers: &[GpuBuffer],
    ) -> wgpu::BindGroup {
        let key = BindKey {
            access: pipe.access,
            weights: pipe.weights,
            arena: generation,
            buffers: buffers.iter().map(GpuBuffer::id).collect(),
        };
        let mut st = lock(&self.state);
        self.evict_freed(&mut st);
        if let Some(bg) = st.bind_groups.get(&key) {
            return bg.clone();
        }
        if st.bind_groups.len() >= BIND_GROUP_CACHE_MAX {
            st.bind_groups.clear();
        }
        st.layouts
            .entry((pipe.access, pipe.weights))
            .or_insert_with(|| self.make_layout(pipe.access, pipe.weights));
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: arena,
                offset: 0,
                size: NonZeroU64::new(PARAM_SLOT),
            }),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: match &b.texture {
                    Some((v, _)) => wgpu::BindingResource::TextureView(v),
                    None => b.buffer.as_entire_binding(),
                },
            });
        }
        let layout = match st.layouts.get(&(pipe.access, pipe.weights)) {
            Some((l, _)) => l,
            None => unreachable!("layout was just inserted"),
        };
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(pipe.name),
            layout,
            entries: &entries,
        });
        st.bind_groups.insert(key, bg.clone());
        bg
    }

    /// Number of cached bind groups (tests check that steady-state decode creates none).
    pub fn bind_group_cache_len(&self) -> usize {
        let mut st = lock(&self.state);
        self.evict_freed(&mut st);
        st.bind_groups.len()
    }
}
