//! Device memory: storage buffers, weight textures, uploads, read-back, scratch and staging.

use super::*;

/// Device memory in use (see [`GpuContext::memory`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuMemory {
    pub buffer_bytes: u64,
    pub texture_bytes: u64,
    pub bind_groups: u64,
}

/// A storage buffer of 4-byte elements (f32 or u32). Cloning shares the buffer (same id).
/// Weight matrices are instead texture-backed (see [`GpuContext::upload_texture`]): `texture`
/// is set (with its format), `buffer` is a 16-byte placeholder, and only kernels whose access
/// string binds a texture ('t') may take them.
#[derive(Clone, Debug)]
pub struct GpuBuffer {
    pub(crate) buffer: wgpu::Buffer,
    id: Arc<BufferId>,
    len: usize,
    pub(crate) texture: Option<(wgpu::TextureView, WeightFormat)>,
}

/// A buffer's identity, shared by its clones. When the last clone goes, the id is queued so
/// that the cached bind groups holding the buffer leave the cache at the next bind, and its
/// memory is freed then, not whenever the cache next fills (a grown attention cache's old
/// buffers were kept alive that way).
#[derive(Debug)]
pub(crate) struct BufferId {
    id: u64,
    freed: Arc<Mutex<Vec<u64>>>,
}

impl Drop for BufferId {
    fn drop(&mut self) {
        lock(&self.freed).push(self.id);
    }
}

impl GpuBuffer {
    /// Id 0: the 16-byte placeholder every texture-backed GpuBuffer shares, and the binding
    /// for absent optional inputs (never evicted).
    pub(super) fn placeholder(device: &wgpu::Device, freed: &Arc<Mutex<Vec<u64>>>) -> Self {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        GpuBuffer {
            buffer,
            id: Arc::new(BufferId {
                id: 0,
                freed: Arc::clone(freed),
            }),
            len: 4,
            texture: None,
        }
    }

    /// Number of 4-byte elements.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Unique id of the underlying buffer (keys the bind-group cache).
    pub fn id(&self) -> u64 {
        self.id.id
    }
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl GpuContext {
    /// A zero-filled storage buffer of `len` 4-byte elements.
    pub fn zeros(&self, label: &str, len: usize) -> GpuResult<GpuBuffer> {
        let bytes = (len as u64).saturating_mul(4).max(16);
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
            .min(self.max_alloc.unwrap_or(u64::MAX));
        if bytes > limit {
            return Err(GpuError::TooLarge {
                what: label.to_string(),
                bytes,
                limit,
            });
        }
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.div_ceil(4) * 4,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuBuffer {
            buffer,
            id: self.new_buffer_id(),
            len,
            texture: None,
        })
    }

    /// Uploads `data` (`height` rows of `v * width` f32, v = `format.values_per_texel()`) into a
    /// new storage texture [height, width]: rgba32float (texel (x, y) holds
    /// `data[y * 4 * width + 4 * x ..][..4]`), or for f16 rgba32uint holding 8 values rounded to
    /// nearest f16, packed two per u32 low half first (`unpack2x16float` order). On CPU Vulkan
    /// (lavapipe) a texel fetch is a vector gather, several times cheaper than a storage-buffer
    /// load, so weight matrices live in textures. Errors if a side exceeds
    /// `max_texture_dimension_2d`.
    pub fn upload_texture(
        &self,
        label: &str,
        data: &[f32],
        width: u32,
        height: u32,
        format: WeightFormat,
    ) -> GpuResult<GpuBuffer> {
        let n = width as usize * height as usize * values_per_texel(format);
        if data.len() != n {
            return Err(GpuError::Shape {
                op: "upload_texture",
                detail: format!(
                    "{label}: {} values for {width}x{height} {} texels",
                    data.len(),
                    format.name()
                ),
            });
        }
        let usage = wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST;
        let (tex, buffer) = self.new_texture(label, width, height, format, usage)?;
        let halves: Vec<half::f16>;
        let bytes: &[u8] = match format {
            WeightFormat::F32 => bytemuck::cast_slice(data),
            WeightFormat::Q8_0 | WeightFormat::Q4_0 => {
                return Err(GpuError::Unsupported(format!(
                    "{label}: quantized textures are uploaded as words (upload_texture_words)"
                )))
            }
            WeightFormat::F16 => {
                // Rounding to f16 must not turn a large finite weight into ±Inf.
                if let Some(index) = crate::model::first_beyond_f16(data) {
                    return Err(GpuError::F16Overflow {
                        label: label.to_string(),
                        index,
                        value: data[index],
                    });
                }
                halves = data.iter().map(|&v| half::f16::from_f32(v)).collect();
                bytemuck::cast_slice(&halves)
            }
        };
        self.queue.write_texture(
            tex.as_image_copy(),
            bytes,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(width * 16),
                rows_per_image: None,
            },
            tex.size(),
        );
        self.check()?;
        Ok(buffer)
    }

    /// Uploads `words` (`height` rows of `4 * width` u32) into a new rgba32uint storage texture
    /// [height, width] tagged `format` (a quantized layout, see `GpuMatrix::from_quant`).
    pub fn upload_texture_words(
        &self,
        label: &str,
        words: &[u32],
        width: u32,
        height: u32,
        format: WeightFormat,
    ) -> GpuResult<GpuBuffer> {
        if words.len() != width as usize * height as usize * 4 || format == WeightFormat::F32 {
            return Err(GpuError::Shape {
                op: "upload_texture_words",
                detail: format!(
                    "{label}: {} words for {width}x{height} {} texels",
                    words.len(),
                    format.name()
                ),
            });
        }
        let usage = wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST;
        let (tex, buffer) = self.new_texture(label, width, height, format, usage)?;
        self.queue.write_texture(
            tex.as_image_copy(),
            bytemuck::cast_slice(words),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(width * 16),
                rows_per_image: None,
            },
            tex.size(),
        );
        self.check()?;
        Ok(buffer)
    }

    /// A new [height, width] storage texture of `format`'s texel format, wrapped as a
    /// [`GpuBuffer`] (placeholder buffer, `len` = the values it holds) so ops bind it like one.
    /// Errors if a side is 0 or exceeds `max_texture_dimension_2d`.
    pub(crate) fn new_texture(
        &self,
        label: &str,
        width: u32,
        height: u32,
        format: WeightFormat,
        usage: wgpu::TextureUsages,
    ) -> GpuResult<(wgpu::Texture, GpuBuffer)> {
        let maxd = self.limits.max_texture_dimension_2d;
        if width == 0 || height == 0 || width > maxd || height > maxd {
            return Err(GpuError::TooLarge {
                what: format!("{label}: texture {width}x{height}"),
                bytes: width.max(height) as u64,
                limit: maxd as u64,
            });
        }
        let tex = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: texture_format(format),
            usage,
            view_formats: &[],
        });
        let buffer = GpuBuffer {
            buffer: self.dummy.buffer.clone(),
            id: self.new_buffer_id(),
            len: width as usize * height as usize * values_per_texel(format),
            texture: Some((tex.create_view(&Default::default()), format)),
        };
        Ok((tex, buffer))
    }

    /// Uploads `data` into a new storage buffer.
    pub fn upload_f32(&self, label: &str, data: &[f32]) -> GpuResult<GpuBuffer> {
        let b = self.zeros(label, data.len())?;
        self.write_f32(&b, 0, data)?;
        Ok(b)
    }

    /// Uploads u32 data (token ids) into a new storage buffer.
    pub fn upload_u32(&self, label: &str, data: &[u32]) -> GpuResult<GpuBuffer> {
        let b = self.zeros(label, data.len())?;
        self.write_u32(&b, 0, data)?;
        Ok(b)
    }

    /// Writes `data` at element `offset` (ordered before the next submit).
    pub fn write_f32(&self, buf: &GpuBuffer, offset: usize, data: &[f32]) -> GpuResult<()> {
        self.write_bytes(buf, offset, data.len(), bytemuck::cast_slice(data))
    }

    pub fn write_u32(&self, buf: &GpuBuffer, offset: usize, data: &[u32]) -> GpuResult<()> {
        self.write_bytes(buf, offset, data.len(), bytemuck::cast_slice(data))
    }

    fn write_bytes(&self, buf: &GpuBuffer, offset: usize, n: usize, bytes: &[u8]) -> GpuResult<()> {
        if offset + n > buf.len {
            return Err(GpuError::Shape {
                op: "write",
                detail: format!(
                    "writing {n} elements at {offset} into a buffer of {}",
                    buf.len
                ),
            });
        }
        if n > 0 {
            self.queue
                .write_buffer(&buf.buffer, offset as u64 * 4, bytes);
        }
        Ok(())
    }

    /// Reads `len` f32 elements starting at element `offset`.
    pub async fn read_f32(
        &self,
        buf: &GpuBuffer,
        offset: usize,
        len: usize,
    ) -> GpuResult<Vec<f32>> {
        let bytes = self.read_bytes(buf, offset, len).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Blocking whole-buffer read (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32_blocking(&self, buf: &GpuBuffer) -> GpuResult<Vec<f32>> {
        pollster::block_on(self.read_f32(buf, 0, buf.len()))
    }

    async fn read_bytes(&self, buf: &GpuBuffer, offset: usize, len: usize) -> GpuResult<Vec<u8>> {
        if offset + len > buf.len {
            return Err(GpuError::Shape {
                op: "read",
                detail: format!(
                    "reading {len} elements at {offset} from a buffer of {}",
                    buf.len
                ),
            });
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let size = len as u64 * 4;
        let pooled = {
            let mut st = lock(&self.state);
            let i = st.staging.iter().position(|b| b.size() >= size);
            i.map(|i| st.staging.swap_remove(i))
        };
        let staging = pooled.unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: size.next_power_of_two().max(4096),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&buf.buffer, offset as u64 * 4, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        self.check()?;
        map_read(self, &staging).await?;
        let out = staging
            .slice(..size)
            .get_mapped_range()
            .map_err(|e| GpuError::Map(e.to_string()))?
            .to_vec();
        staging.unmap();
        // Errors of the work this read waited for (on the web they arrive asynchronously).
        self.check()?;
        lock(&self.state).staging.push(staging);
        Ok(out)
    }

    /// Waits for all submitted work (native; a no-op on the web).
    pub fn wait_idle(&self) -> GpuResult<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        self.check()
    }

    fn new_buffer_id(&self) -> Arc<BufferId> {
        Arc::new(BufferId {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            freed: self.freed.clone(),
        })
    }

    /// Drops the cached bind groups that bind a buffer whose last handle is gone.
    pub(super) fn evict_freed(&self, st: &mut State) {
        let freed: Vec<u64> = std::mem::take(&mut *lock(&self.freed));
        if !freed.is_empty() {
            st.bind_groups
                .retain(|k, _| !k.buffers.iter().any(|id| freed.contains(id)));
        }
    }

    /// A scratch buffer named `name` of at least `len` elements, reused across calls.
    /// Dispatches run in submission order, so reuse between ops is safe.
    pub(crate) fn scratch(&self, name: &'static str, len: usize) -> GpuResult<GpuBuffer> {
        if let Some(b) = lock(&self.state).scratch.get(name) {
            if b.len >= len {
                return Ok(b.clone());
            }
        }
        let b = self.zeros(name, len.next_power_of_two())?;
        lock(&self.state).scratch.insert(name, b.clone());
        Ok(b)
    }

    /// The 64 KiB uniform buffer kernels read small operands from (the decode step's B and C,
    /// matvec_f16's X), filled by a copy recorded before each use. Uniform loads at constant
    /// addresses are the cheapest loads on CPU Vulkan (at other addresses, gathers); 64 KiB is
    /// WebGPU's guaranteed uniform binding size.
    pub(crate) fn uniform_staging(&self) -> GpuBuffer {
        let mut st = lock(&self.state);
        st.uniform_staging
            .get_or_insert_with(|| GpuBuffer {
                buffer: self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("uniform staging"),
                    size: UNIFORM_STAGING_BYTES,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                id: self.new_buffer_id(),
                len: (UNIFORM_STAGING_BYTES / 4) as usize,
                texture: None,
            })
            .clone()
    }

    /// A scratch rgba32float storage texture of at least `width` x `height` texels, reused across
    /// calls (activations packed for texel fetches: see ops::matmul). Errors past
    /// `max_texture_dimension_2d`.
    pub(crate) fn x_texture(&self, width: u32, height: u32) -> GpuResult<GpuBuffer> {
        let mut st = lock(&self.state);
        if let Some((b, w, h)) = &st.x_texture {
            if *w >= width && *h >= height {
                return Ok(b.clone());
            }
        }
        let (w, h) = match &st.x_texture {
            Some((_, w, h)) => (width.max(*w), height.max(*h)),
            None => (width, height),
        };
        // COPY_DST: decode's matvec copies aligned X rows in (Recorder::copy_to_texture_row).
        let usage = wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST;
        let (_, b) = self.new_texture("activation texture", w, h, WeightFormat::F32, usage)?;
        st.x_texture = Some((b.clone(), w, h));
        Ok(b)
    }

    /// Drops cached bind groups and scratch buffers (pipelines are kept).
    pub fn clear_caches(&self) {
        let mut st = lock(&self.state);
        st.bind_groups.clear();
        st.scratch.clear();
        st.x_texture = None;
    }

    /// What the device holds now: bytes in buffers and textures, and live bind groups, from
    /// wgpu's internal counters (native only; `None` in the browser, where the WebGPU
    /// implementation keeps them).
    pub fn memory(&self) -> Option<GpuMemory> {
        self.evict_freed(&mut lock(&self.state));
        #[cfg(not(target_arch = "wasm32"))]
        {
            let hal = self.device.get_internal_counters().hal;
            Some(GpuMemory {
                buffer_bytes: hal.buffer_memory.read().max(0) as u64,
                texture_bytes: hal.texture_memory.read().max(0) as u64,
                bind_groups: hal.bind_groups.read().max(0) as u64,
            })
        }
        #[cfg(target_arch = "wasm32")]
        {
            None
        }
    }
}
