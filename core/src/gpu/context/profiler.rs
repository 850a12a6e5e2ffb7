//! The per-dispatch profiler: timestamp queries on a GPU, the host clock on a CPU adapter.

use super::*;

/// How the profiler times each dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileClock {
    /// Timestamp queries around each dispatch: a GPU's own clock.
    Timestamps,
    /// The host's clock around each command submitted alone and waited for, less the cost of
    /// an empty submission. For CPU adapters (lavapipe, SwiftShader), whose timestamp queries
    /// do not bracket the dispatches (lavapipe resolves them when its draw pipeline flushes:
    /// decode kernels summed to ~10% of the wall time), and for native adapters without
    /// `TIMESTAMP_QUERY`. Slower: every command waits for the one before.
    Host,
}

impl ProfileClock {
    /// Its name in `TM_PROFILE_CLOCK` and in `tm-run bench --json` (`profile_clock`).
    pub fn name(self) -> &'static str {
        match self {
            ProfileClock::Timestamps => "timestamps",
            ProfileClock::Host => "host",
        }
    }
}

pub(super) struct PendingProfile {
    staging: wgpu::Buffer,
    labels: Vec<&'static str>,
}

impl GpuContext {
    /// Turns per-dispatch timing on or off; returns whether it is on (the host clock always
    /// can be, natively; timestamps need `TIMESTAMP_QUERY`).
    pub fn set_profiling(&self, on: bool) -> bool {
        let on = on && (self.profile_clock == ProfileClock::Host || self.has_timestamps());
        self.profiling.store(on, Ordering::Relaxed);
        on
    }

    pub fn profiling(&self) -> bool {
        self.profiling.load(Ordering::Relaxed)
    }

    /// How the profiler times dispatches on this adapter (`TM_PROFILE_CLOCK=timestamps|host`
    /// overrides the choice natively).
    pub fn profile_clock(&self) -> ProfileClock {
        self.profile_clock
    }

    /// Adds `ms` to `label`'s running total (host-clock profiling).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn add_profile(&self, label: &'static str, ms: f64) {
        let mut st = lock(&self.state);
        let e = st.profile_totals.entry(label).or_insert((0.0, 0));
        e.0 += ms;
        e.1 += 1;
    }

    /// What submitting an empty command buffer and waiting for it costs (ms): the least of 15,
    /// measured once, after pending work (uploads) has drained. The host clock subtracts it
    /// from every command it times; the least, because a busy moment must not be taken off
    /// every later command (~22 us on lavapipe).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn host_submit_ms(&self) -> GpuResult<f64> {
        if let Some(ms) = lock(&self.state).host_submit_ms {
            return Ok(ms);
        }
        self.wait_idle()?;
        let mut least = f64::MAX;
        for _ in 0..15 {
            let t = std::time::Instant::now();
            let enc = self.device.create_command_encoder(&Default::default());
            self.queue.submit([enc.finish()]);
            self.wait_idle()?;
            least = least.min(t.elapsed().as_secs_f64() * 1e3);
        }
        lock(&self.state).host_submit_ms = Some(least);
        Ok(least)
    }

    pub(crate) fn push_profile(&self, staging: wgpu::Buffer, labels: Vec<&'static str>) {
        lock(&self.state)
            .pending_profiles
            .push(PendingProfile { staging, labels });
    }

    /// Reads the timestamps of all submissions made since the last call, adds them to the running
    /// totals and returns the totals as (shader name, milliseconds, dispatches), slowest first.
    pub async fn profile_collect(&self) -> GpuResult<Vec<(String, f64, u64)>> {
        let pending = std::mem::take(&mut lock(&self.state).pending_profiles);
        let period_ns = self.queue.get_timestamp_period() as f64;
        for p in pending {
            map_read(self, &p.staging).await?;
            let ticks: Vec<u64> = {
                let view = p
                    .staging
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| GpuError::Map(e.to_string()))?;
                bytemuck::pod_collect_to_vec(&view)
            };
            p.staging.unmap();
            let mut st = lock(&self.state);
            for (i, label) in p.labels.iter().enumerate() {
                let (a, b) = (ticks[2 * i], ticks[2 * i + 1]);
                let ms = b.saturating_sub(a) as f64 * period_ns / 1e6;
                let e = st.profile_totals.entry(label).or_insert((0.0, 0));
                e.0 += ms;
                e.1 += 1;
            }
        }
        let st = lock(&self.state);
        let mut v: Vec<(String, f64, u64)> = st
            .profile_totals
            .iter()
            .map(|(k, (ms, n))| (k.to_string(), *ms, *n))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(v)
    }

    pub fn profile_reset(&self) {
        let mut st = lock(&self.state);
        st.profile_totals.clear();
        st.pending_profiles.clear();
    }
}
