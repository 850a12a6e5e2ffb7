//! One layer's attention cache on the GPU: B (keys), x (values) and dt of every position before
//! the layer's TransPoint, and what happens to it — grow, append, attend, convert into the SSM
//! state at the TransPoint (after which the owner drops it), and move to and from the host for
//! saved sessions. The counterpart of [`SsmState`], which holds the layer's memory after.

use super::model::GpuModel;
use crate::cpu::mixer::AttentionCache as HostCache;
use crate::error::Result;
use crate::gpu::ops::{self, AttentionTextures, SsmState, View};
use crate::gpu::{GpuBuffer, Recorder};
use crate::schedule::TransPoint;

/// Rows are stored dense (`[capacity, G·N]`, `[capacity, H·P]`, `[capacity, H]`); without RoPE
/// the keys and values are also kept as textures, for attention as two products
/// (`ops::attention_products`). Clones share the buffers (a step's rollback keeps one).
#[derive(Clone)]
pub(super) struct AttentionCache {
    b: GpuBuffer,
    x: GpuBuffer,
    dt: GpuBuffer,
    tex: Option<AttentionTextures>,
    capacity: usize,
    len: usize,
}

/// Widths of one cached row.
struct Widths {
    gn: u32,
    di: u32,
    h: u32,
}

fn widths(m: &GpuModel) -> Widths {
    let c = &m.config;
    Widths {
        gn: (c.n_groups * c.state_size) as u32,
        di: c.d_inner() as u32,
        h: c.num_heads as u32,
    }
}

impl AttentionCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `slot`'s cache, grown to hold at least `needed` rows: doubling (at least 64), capped at
    /// the layer's TransPoint so a layer never holds more than τ entries. The old rows are
    /// copied in `rec` (the old buffers live on in it until submitted).
    pub fn reserve<'a>(
        slot: &'a mut Option<Self>,
        m: &GpuModel,
        rec: &mut Recorder,
        transpoint: TransPoint,
        needed: usize,
    ) -> Result<&'a mut Self> {
        let old = match slot.take() {
            Some(a) if a.capacity >= needed => return Ok(slot.insert(a)),
            old => old,
        };
        let mut capacity = needed.next_power_of_two().max(64);
        if let TransPoint::At(tau) = transpoint {
            capacity = capacity.min(tau).max(needed);
        }
        let w = widths(m);
        let tex = match m.config.rope_theta.filter(|&t| t > 0.0) {
            None if m.options.attention_products => {
                AttentionTextures::new(&m.ctx, m.dims(), capacity as u32)?
            }
            _ => None,
        };
        let new = Self {
            b: m.ctx.zeros("attention_cache.B", capacity * w.gn as usize)?,
            x: m.ctx.zeros("attention_cache.x", capacity * w.di as usize)?,
            dt: m.ctx.zeros("attention_cache.dt", capacity * w.h as usize)?,
            tex,
            capacity,
            len: old.as_ref().map_or(0, |a| a.len),
        };
        if let Some(old) = old {
            rec.copy(&old.b, 0, &new.b, 0, old.len * w.gn as usize)?;
            rec.copy(&old.x, 0, &new.x, 0, old.len * w.di as usize)?;
            rec.copy(&old.dt, 0, &new.dt, 0, old.len * w.h as usize)?;
            new.append_textures(rec, &w, 0, old.len as u32)?;
        }
        Ok(slot.insert(new))
    }

    fn keys(&self, w: &Widths) -> View<'_> {
        View::dense(&self.b, w.gn)
    }

    fn values(&self, w: &Widths) -> View<'_> {
        View::dense(&self.x, w.di)
    }

    fn append_textures(&self, rec: &mut Recorder, w: &Widths, from: u32, to: u32) -> Result<()> {
        if let Some(tex) = &self.tex {
            tex.append(rec, self.keys(w), self.values(w), from, to)?;
        }
        Ok(())
    }

    /// Appends `rows` rows of B, x and dt at the end (the cache must have room: `reserve`).
    pub fn append(
        &mut self,
        m: &GpuModel,
        rec: &mut Recorder,
        rows: u32,
        b: View,
        x: View,
        dt: View,
    ) -> Result<()> {
        let w = widths(m);
        let at = self.len as u32;
        ops::copy_rows(rec, rows, w.gn, b, View::dense(&self.b, w.gn).rows_from(at))?;
        ops::copy_rows(rec, rows, w.di, x, View::dense(&self.x, w.di).rows_from(at))?;
        ops::copy_rows(rec, rows, w.h, dt, View::dense(&self.dt, w.h).rows_from(at))?;
        self.append_textures(rec, &w, at, at + rows)?;
        self.len += rows as usize;
        Ok(())
    }

    /// Attention of the last `rows` cached positions' queries `c` over every cached position up
    /// to each query's own; writes `y`.
    pub fn attend(
        &self,
        m: &GpuModel,
        rec: &mut Recorder,
        rows: u32,
        c: View,
        y: View,
    ) -> Result<()> {
        let (w, dims, cfg) = (widths(m), m.dims(), &m.config);
        let first = (self.len - rows as usize) as u32;
        let scale = cfg.attention_scale;
        // The gpu plan's prefill goes through the flash-style kernel; decode (one query over a
        // long cache) through the products' split-K.
        let tiles = m.ctx.plan().gpu_products() && ops::attention_tiles_supported(dims, rows);
        match &self.tex {
            Some(tex) if !tiles => {
                ops::attention_products(rec, dims, rows, first, c, tex, y, scale)?
            }
            _ => {
                let (kc, vc) = (self.keys(&w), self.values(&w));
                ops::attention(rec, dims, rows, first, c, kc, vc, y, scale, cfg.rope_theta)?
            }
        }
        Ok(())
    }

    /// The memory converter: writes into `state` the SSM state these positions leave
    /// (`a_log` is the layer's). The caller drops the cache once this is submitted.
    pub fn convert(
        &self,
        m: &GpuModel,
        rec: &mut Recorder,
        a_log: &GpuBuffer,
        state: &mut SsmState,
    ) -> Result<()> {
        let w = widths(m);
        let dt = View::dense(&self.dt, w.h);
        let target = state.buffer(rec)?.clone();
        let (len, chunk) = (self.len as u32, m.options.chunk_size);
        ops::memory_converter(
            rec,
            m.dims(),
            len,
            self.values(&w),
            self.keys(&w),
            dt,
            a_log,
            &target,
            chunk,
        )?;
        Ok(())
    }

    /// The filled rows, read back (for a saved session).
    pub async fn read(&self, m: &GpuModel) -> Result<HostCache> {
        let (w, ctx) = (widths(m), &m.ctx);
        Ok(HostCache {
            b: ctx.read_f32(&self.b, 0, self.len * w.gn as usize).await?,
            x: ctx.read_f32(&self.x, 0, self.len * w.di as usize).await?,
            dt: ctx.read_f32(&self.dt, 0, self.len * w.h as usize).await?,
            len: self.len,
        })
    }

    /// A cache holding `host`'s rows (shapes checked by the caller), in `slot`.
    pub fn upload(
        slot: &mut Option<Self>,
        m: &GpuModel,
        rec: &mut Recorder,
        transpoint: TransPoint,
        host: &HostCache,
    ) -> Result<()> {
        let cache = Self::reserve(slot, m, rec, transpoint, host.len)?;
        // Queue writes land before the submission that reads them (the textures' append).
        m.ctx.write_f32(&cache.b, 0, &host.b)?;
        m.ctx.write_f32(&cache.x, 0, &host.x)?;
        m.ctx.write_f32(&cache.dt, 0, &host.dt)?;
        cache.len = host.len;
        cache.append_textures(rec, &widths(m), 0, host.len as u32)
    }
}
