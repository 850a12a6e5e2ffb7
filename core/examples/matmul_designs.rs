//! Microbenchmark of prefill matmul designs (Y = X W^T, X [T, K] and W [O, K] both in
//! rgba32float textures) against the shipped kernel (`ops::matmul`, matmul_xtex_sg):
//!
//!   cargo run --release -p transmamba --example matmul_designs
//!
//! T x K -> O defaults to 512 x 768 -> 3352 (mamba2-130m's in_proj over a 512-token prompt).
//! Each design is checked against a CPU product, then timed: best of 3 rounds of 5 dispatches
//! (12 for the shipped kernel). `NW=6` rotates the shipped kernel over 6 copies of W, so W comes
//! from DRAM as in a model's layers rather than staying in cache; `ONLY_SHIPPED=1` stops there.
#![allow(non_snake_case)]
use std::time::Instant;

use transmamba::gpu::{matmul, GpuContext, GpuMatrix, GpuOptions, Recorder, View};
use wgpu::util::DeviceExt;

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (T, K, O) = (env("T", 512), env("K", 768), env("O", 3352));
    let x: Vec<f32> = (0..T * K)
        .map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5)
        .collect();
    let w: Vec<f32> = (0..O * K)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let want = |t: usize, o: usize| -> f32 {
        (0..K as usize)
            .map(|k| x[t * K as usize + k] * w[o * K as usize + k])
            .sum()
    };
    let flops = 2.0 * (T as f64) * (K as f64) * (O as f64);

    // The shipped kernel, through the engine's op.
    {
        let c = GpuContext::new_blocking(GpuOptions::default()).unwrap();
        let nw = env("NW", 1) as usize;
        let wms: Vec<GpuMatrix> = (0..nw)
            .map(|_| GpuMatrix::from_f32(&c, "w", &w, O as usize, K as usize).unwrap())
            .collect();
        let xb = c.upload_f32("x", &x).unwrap();
        let yb = c.zeros("y", (T * O) as usize).unwrap();
        let run = |n: u32| {
            let mut rec = Recorder::new(&c);
            for i in 0..n as usize {
                let (xv, yv) = (View::dense(&xb, K), View::dense(&yb, O));
                matmul(&mut rec, T, xv, &wms[i % nw], None, yv, false).unwrap();
            }
            rec.submit().unwrap();
            c.wait_idle().unwrap();
        };
        run(1);
        let y = c.read_f32_blocking(&yb).unwrap();
        assert!((y[7 * O as usize + 5] - want(7, 5)).abs() < 1e-3);
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            run(12);
            best = best.min(t.elapsed().as_secs_f64() / 12.0);
        }
        println!(
            "{:44} {:8.2} ms {:6.1} GFLOP/s",
            "shipped (ops::matmul)",
            best * 1e3,
            flops / best / 1e9
        );
    }

    if env("ONLY_SHIPPED", 0) == 1 {
        return;
    }
    let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(inst.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: wgpu::Features::SUBGROUP,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let tex = |width: u32, height: u32, data: &[f32]| {
        device
            .create_texture_with_data(
                &queue,
                &wgpu::TextureDescriptor {
                    label: None,
                    size: wgpu::Extent3d {
                        width,
                        height,
                        depth_or_array_layers: 1,
                    },
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: wgpu::TextureFormat::Rgba32Float,
                    usage: wgpu::TextureUsages::STORAGE_BINDING,
                    view_formats: &[],
                },
                wgpu::util::TextureDataOrder::LayerMajor,
                bytemuck::cast_slice(data),
            )
            .create_view(&Default::default())
    };
    let (xt, wt) = (tex(K / 4, T, &x), tex(K / 4, O, &w));
    let yb = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (T * O * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let rb = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (T * O * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let head = format!(
        "const T: u32 = {T}u; const K4: u32 = {}u; const O: u32 = {O}u;\n\
         @group(0) @binding(0) var xt: texture_storage_2d<rgba32float, read>;\n\
         @group(0) @binding(1) var wt: texture_storage_2d<rgba32float, read>;\n\
         @group(0) @binding(2) var<storage, read_write> ys: array<f32>;\n",
        K / 4
    );
    // (name, body, outputs per workgroup (x), rows per workgroup (y))
    let mut designs: Vec<(String, String, u32, u32)> = Vec::new();
    // Shared-memory X tile: a workgroup of 64 lanes stages R rows x KC texels of X, then each
    // lane (one output column) reads them at lane-uniform addresses and its W texel once per k4.
    for (r, kc) in [(8u32, 64u32), (16, 32), (12, 32)] {
        let accs: String = (0..r).map(|i| format!("var a{i} = 0.0;")).collect();
        let fmas: String = (0..r)
            .map(|i| format!("a{i} += dot(xs[{i}u * KC + kk], wv);"))
            .collect();
        let stores: String = (0..r)
            .map(|i| format!("if (t0 + {i}u < T && o < O) {{ ys[(t0 + {i}u) * O + o] = a{i}; }}"))
            .collect();
        designs.push((
            format!("shared X {r} rows x {kc} texels, 64 outputs/wg"),
            format!(
                "const R: u32 = {r}u; const KC: u32 = {kc}u;
var<workgroup> xs: array<vec4<f32>, {n}>;
@compute @workgroup_size(64) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {{
  let o = wid.x * 64u + l;
  let t0 = wid.y * R;
  let orow = i32(min(o, O - 1u));
  {accs}
  for (var k0 = 0u; k0 < K4; k0 += KC) {{
    workgroupBarrier();
    for (var i = l; i < R * KC; i += 64u) {{
      let rr = i / KC; let kk = i - rr * KC;
      xs[i] = textureLoad(xt, vec2<i32>(i32(min(k0 + kk, K4 - 1u)), i32(min(t0 + rr, T - 1u))));
    }}
    workgroupBarrier();
    let kn = min(KC, K4 - k0);
    for (var kk = 0u; kk < kn; kk += 1u) {{
      let wv = textureLoad(wt, vec2<i32>(i32(k0 + kk), orow));
      {fmas}
    }}
  }}
  {stores}
}}",
                n = r * kc
            ),
            64,
            r,
        ));
    }
    for (name, body, per_x, per_y) in &designs {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(format!("{head}{body}").into()),
        });
        let pl = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pl.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(&xt),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&wt),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: yb.as_entire_binding(),
                },
            ],
        });
        let groups = [O.div_ceil(*per_x), T.div_ceil(*per_y), 1];
        let run = |n: u32| {
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pl);
                pass.set_bind_group(0, &bg, &[]);
                for _ in 0..n {
                    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                }
            }
            enc.copy_buffer_to_buffer(&yb, 0, &rb, 0, (T * O * 4) as u64);
            queue.submit([enc.finish()]);
            rb.slice(..).map_async(wgpu::MapMode::Read, |_| {});
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            let y: Vec<f32> =
                bytemuck::cast_slice(&rb.slice(..).get_mapped_range().unwrap()).to_vec();
            rb.unmap();
            y
        };
        let y = run(1);
        for (t, o) in [
            (0usize, 0usize),
            (7, 5),
            (T as usize - 1, O as usize - 1),
            (100, 1000),
        ] {
            let (g, e) = (y[t * O as usize + o], want(t, o));
            assert!((g - e).abs() < 1e-3, "{name}: y[{t}, {o}] = {g}, want {e}");
        }
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            run(5);
            best = best.min(t.elapsed().as_secs_f64() / 5.0);
        }
        println!(
            "{name:44} {:8.2} ms {:6.1} GFLOP/s",
            best * 1e3,
            flops / best / 1e9
        );
    }
}
