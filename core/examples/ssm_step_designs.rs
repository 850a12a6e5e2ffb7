//! Microbenchmark of decode SSM-step designs on the default adapter: where the state
//! [H, P, N] lives (read-write storage buffer, or a read-only + write-only texture pair swapped
//! every token) and where B and C are read from (storage, or the uniform staging buffer),
//! plus timing-only designs that bound what a change could gain (no load, no store, a state
//! written every 8 tokens). It produced the SSM-step tables in docs/performance-log.md; the
//! shipped kernel is shaders/ssm_step_tex.wgsl.
//!
//!   cargo run --release -p transmamba --example ssm_step_designs
//!   L=24 cargo run --release -p transmamba --example ssm_step_designs
//!   ONLY="B/C uniform" ROUNDS=100000 cargo run ...   (one design, long: to profile it)
//!
//! L rotates the texture designs over L layers' states (24: the states leave the caches, as
//! in decode, where the step costs ~1.5x its cache-resident time).
//! mamba2-130m's shape per layer (H 24, P 64, N 128, G 1). Every design is checked against a
//! CPU step, then timed: best of 4 interleaved rounds of 48 steps in one submission.
use std::time::Instant;
use wgpu::util::DeviceExt;

const H: u32 = 24;
const P: u32 = 64;
const N: u32 = 128;

fn main() {
    let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(inst.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let f = |i: u32, m: u32| ((i * 7919) % m) as f32 / m as f32 - 0.5;
    let state: Vec<f32> = (0..H * P * N).map(|i| f(i, 1000)).collect();
    let x: Vec<f32> = (0..H * P).map(|i| f(i, 97)).collect();
    let bc: Vec<f32> = (0..2 * N).map(|i| f(i, 89)).collect();
    let dt: Vec<f32> = (0..H).map(|i| 0.01 + 0.02 * i as f32).collect();
    let a_log: Vec<f32> = (0..H).map(|i| 0.1 * i as f32).collect();
    let want: Vec<f32> = (0..H * P)
        .map(|i| {
            let h = i / P;
            let (d, a) = (dt[h as usize], -a_log[h as usize].exp());
            (0..N)
                .map(|n| {
                    let s = (d * a).exp() * state[(i * N + n) as usize]
                        + d * x[i as usize] * bc[n as usize];
                    s * bc[(N + n) as usize]
                })
                .sum()
        })
        .collect();
    let storage = |data: &[f32], usage: wgpu::BufferUsages| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(data),
            usage,
        })
    };
    let st = wgpu::BufferUsages::STORAGE;
    let small: Vec<f32> = [x.clone(), dt.clone(), a_log.clone()].concat();
    let small_buf = storage(&small, st);
    let bc_buf = storage(&bc, st);
    let bc_ubo = storage(&bc, wgpu::BufferUsages::UNIFORM);
    let y = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (H * P * 4) as u64,
        usage: st | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let rb = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (H * P * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let state_t: Vec<f32> = (0..N / 4)
        .flat_map(|j| {
            (0..H * P).flat_map(move |i| (0..4).map(move |c| (i * N + 4 * j + c) as usize))
        })
        .map(|k| state[k])
        .collect();
    let new_state_tex = |tr: bool| -> Vec<wgpu::TextureView> {
        (0..2)
            .map(|_| {
                device
                    .create_texture_with_data(
                        &queue,
                        &wgpu::TextureDescriptor {
                            label: None,
                            size: wgpu::Extent3d {
                                width: if tr { H * P } else { N / 4 },
                                height: if tr { N / 4 } else { H * P },
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
                        bytemuck::cast_slice(if tr { &state_t } else { &state }),
                    )
                    .create_view(&Default::default())
            })
            .collect()
    };

    let head = format!(
        "const H: u32 = {H}u; const P: u32 = {P}u; const N4: u32 = {}u;\n\
         @group(0) @binding(0) var<storage, read> small: array<f32>;\n\
         @group(0) @binding(1) var<storage, read_write> ys: array<f32>;\n",
        N / 4
    );
    // (name, declarations + body; `bload(j)`/`cload(j)` and the state accesses differ)
    let bc_storage = "@group(0) @binding(2) var<storage, read> bc: array<vec4<f32>>;\n";
    let bc_uniform = "@group(0) @binding(2) var<uniform> bc: array<vec4<f32>, 64>;\n";
    let s_rw = "@group(0) @binding(3) var<storage, read_write> s: array<vec4<f32>>;\n";
    let s_inout = "@group(0) @binding(3) var<storage, read> s_in: array<vec4<f32>>;\n\
                   @group(0) @binding(4) var<storage, read_write> s_out: array<vec4<f32>>;\n";
    let s_tex = "@group(0) @binding(3) var s_in: texture_storage_2d<rgba32float, read>;\n\
                 @group(0) @binding(4) var s_out: texture_storage_2d<rgba32float, write>;\n";
    let body = |load: &str, store: &str| {
        format!(
            "@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
  let i = gid.x; let h = i / P;
  let d = small[H * P + h];
  let da = exp(d * -exp(small[H * P + H + h]));
  let dx = d * small[i];
  var acc = vec4<f32>(0.0);
  for (var j = 0u; j < N4; j += 1u) {{
    let v = da * {load} + dx * bc[j];
    {store}
    acc += v * bc[N4 + j];
  }}
  ys[i] = acc.x + acc.y + acc.z + acc.w;
}}"
        )
    };
    let rw = body("s[i * N4 + j]", "s[i * N4 + j] = v;");
    let inout = body("s_in[i * N4 + j]", "s_out[i * N4 + j] = v;");
    let tex = body(
        "textureLoad(s_in, vec2<i32>(i32(j), i32(i)))",
        "textureStore(s_out, vec2<i32>(i32(j), i32(i)), v);",
    );
    // The shipped loop unrolled, so that every B/C index is a constant: Mesa then loads them as
    // scalars (one broadcast per value) instead of gathering them lane by lane.
    let mut unrolled = String::from(
        "@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x; let h = i / P;
  let d = small[H * P + h];
  let da = exp(d * -exp(small[H * P + H + h]));
  let dx = d * small[i];
  var acc = vec4<f32>(0.0);
  var v: vec4<f32>;\n",
    );
    for j in 0..N / 4 {
        let at = format!("vec2<i32>({j}, i32(i))");
        unrolled += &format!(
            "  v = da * textureLoad(s_in, {at}) + dx * bc[{j}];\n  textureStore(s_out, {at}, v);\n  acc += v * bc[{}];\n",
            N / 4 + j
        );
    }
    unrolled += "  ys[i] = acc.x + acc.y + acc.z + acc.w;\n}";
    // Timing only: a decode step that writes the state every 8 tokens instead of every token
    // (the SSD form over a window of 8: y = C (a S0) + sum_s a_s (C . B_s) dt_s x_s, the C . B_s
    // reduced across the workgroup), and the flush that folds the 8 tokens into the state.
    // Stand-in data: B_s are rows of the state texture, a_s and dt_s x_s entries of `small`.
    let win_step = "var<workgroup> part: array<f32, 64>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = gid.x; let h = i / P;
  let s = li / 8u; let q = li % 8u;
  var pd = 0.0;
  for (var u = 0u; u < N4 / 8u; u += 1u) { let j = q * (N4 / 8u) + u; pd += dot(textureLoad(s_in, vec2<i32>(i32(j), i32(s))), bc[N4 + j]); }
  part[li] = pd;
  workgroupBarrier();
  let d = small[H * P + h];
  let lt = d * -exp(small[H * P + H + h]);
  var acc = vec4<f32>(0.0);
  for (var j = 0u; j < N4; j += 1u) { acc += textureLoad(s_in, vec2<i32>(i32(j), i32(i))) * bc[N4 + j]; }
  var y = exp(lt) * (acc.x + acc.y + acc.z + acc.w);
  for (var s2 = 0u; s2 < 8u; s2 += 1u) {
    let b = s2 * 8u;
    let g = part[b] + part[b + 1u] + part[b + 2u] + part[b + 3u] + part[b + 4u] + part[b + 5u] + part[b + 6u] + part[b + 7u];
    y += exp(lt - small[H * P + (s2 % 2u) * H + h]) * g * small[(i + s2 * 7u) % (H * P)];
  }
  if (y == 12345.0) { textureStore(s_out, vec2<i32>(0, 0), vec4<f32>(y)); }
  ys[i] = y;
}";
    let win_flush = "@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x; let h = i / P;
  let d = small[H * P + h];
  let lt = d * -exp(small[H * P + H + h]);
  var w: array<f32, 8>;
  for (var s2 = 0u; s2 < 8u; s2 += 1u) { w[s2] = exp(lt - small[H * P + (s2 % 2u) * H + h]) * small[(i + s2 * 7u) % (H * P)]; }
  let da = exp(lt);
  var acc = vec4<f32>(0.0);
  for (var j = 0u; j < N4; j += 1u) {
    var v = da * textureLoad(s_in, vec2<i32>(i32(j), i32(i)));
    for (var s2 = 0u; s2 < 8u; s2 += 1u) { v += w[s2] * textureLoad(s_in, vec2<i32>(i32(j), i32(s2))); }
    textureStore(s_out, vec2<i32>(i32(j), i32(i)), v);
    acc += v * bc[N4 + j];
  }
  ys[i] = acc.x + acc.y + acc.z + acc.w;
}";
    let tex_t = body(
        "textureLoad(s_in, vec2<i32>(i32(i), i32(j)))",
        "textureStore(s_out, vec2<i32>(i32(i), i32(j)), v);",
    );
    let tex_noload = body(
        "textureLoad(s_in, vec2<i32>(0, 0))",
        "textureStore(s_out, vec2<i32>(i32(j), i32(i)), v);",
    );
    let tex_nostore = body(
        "textureLoad(s_in, vec2<i32>(i32(j), i32(i)))",
        "if (v.x == 12345.0) { textureStore(s_out, vec2<i32>(0, 0), v); }",
    );
    let designs: Vec<(&str, String, u8)> = vec![
        (
            "(no check) textures, no load",
            format!("{bc_uniform}{s_tex}{tex_noload}"),
            3,
        ),
        (
            "(no check) textures, no store",
            format!("{bc_uniform}{s_tex}{tex_nostore}"),
            3,
        ),
        (
            "state in/out textures [N/4, H*P]",
            format!("{bc_uniform}{s_tex}{tex_t}"),
            5,
        ),
        (
            "(no check) window of 8: a token, no store",
            format!("{bc_uniform}{s_tex}{win_step}"),
            3,
        ),
        (
            "(no check) window of 8: the flush",
            format!("{bc_uniform}{s_tex}{win_flush}"),
            3,
        ),
        (
            "in/out textures, B/C at constant indices",
            format!("{bc_uniform}{s_tex}{unrolled}"),
            3,
        ),
        (
            "state rw buffer, B/C storage",
            format!("{bc_storage}{s_rw}{rw}"),
            0,
        ),
        (
            "state rw buffer, B/C uniform",
            format!("{bc_uniform}{s_rw}{rw}"),
            1,
        ),
        (
            "state in/out buffers, B/C uniform",
            format!("{bc_uniform}{s_inout}{inout}"),
            2,
        ),
        (
            "state in/out textures, B/C uniform",
            format!("{bc_uniform}{s_tex}{tex}"),
            3,
        ),
        (
            "state in/out textures, B/C storage",
            format!("{bc_storage}{s_tex}{tex}"),
            4,
        ),
    ];
    // (name, run n steps and read y back)
    type Run<'a> = (&'a str, Box<dyn Fn(u32) -> Vec<f32> + 'a>);
    let mut runs: Vec<Run> = Vec::new();
    for (name, src, kind) in designs {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(format!("{head}{src}").into()),
        });
        let pl = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        // Fresh state per design: every design's first step is checked from the same state.
        let state_bufs = [storage(&state, st), storage(&state, st)];
        let layers: usize = std::env::var("L")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let state_texs: Vec<Vec<wgpu::TextureView>> =
            (0..layers).map(|_| new_state_tex(kind == 5)).collect();
        let bc_res = if kind == 0 || kind == 4 {
            &bc_buf
        } else {
            &bc_ubo
        };
        // Two bind groups: token t reads state t % 2 and writes the other (rw: the same one).
        let bgs: Vec<wgpu::BindGroup> = (0..2 * layers)
            .map(|lt| {
                let (state_tex, t) = (&state_texs[lt / 2], lt % 2);
                let mut e = vec![
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: small_buf.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: y.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: bc_res.as_entire_binding(),
                    },
                ];
                match kind {
                    0 | 1 => e.push(wgpu::BindGroupEntry {
                        binding: 3,
                        resource: state_bufs[0].as_entire_binding(),
                    }),
                    2 => {
                        e.push(wgpu::BindGroupEntry {
                            binding: 3,
                            resource: state_bufs[t].as_entire_binding(),
                        });
                        e.push(wgpu::BindGroupEntry {
                            binding: 4,
                            resource: state_bufs[1 - t].as_entire_binding(),
                        });
                    }
                    _ => {
                        e.push(wgpu::BindGroupEntry {
                            binding: 3,
                            resource: wgpu::BindingResource::TextureView(&state_tex[t]),
                        });
                        e.push(wgpu::BindGroupEntry {
                            binding: 4,
                            resource: wgpu::BindingResource::TextureView(&state_tex[1 - t]),
                        });
                    }
                }
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pl.get_bind_group_layout(0),
                    entries: &e,
                })
            })
            .collect();
        let (device, queue, y, rb) = (&device, &queue, &y, &rb);
        let run = move |n: u32| {
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pl);
                for t in 0..n as usize {
                    let (l, parity) = (t % layers, (t / layers) % 2);
                    pass.set_bind_group(0, &bgs[2 * l + parity], &[]);
                    pass.dispatch_workgroups(H * P / 64, 1, 1);
                }
            }
            enc.copy_buffer_to_buffer(y, 0, rb, 0, (H * P * 4) as u64);
            queue.submit([enc.finish()]);
            rb.slice(..).map_async(wgpu::MapMode::Read, |_| {});
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            let out: Vec<f32> =
                bytemuck::cast_slice(&rb.slice(..).get_mapped_range().unwrap()).to_vec();
            rb.unmap();
            out
        };
        // Checked on the first step (each design starts from the same initial state).
        let got = run(1);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            name.starts_with("(no") || err < 1e-3,
            "{name}: max error {err}"
        );
        runs.push((name, Box::new(run)));
    }
    let mut best = vec![f64::MAX; runs.len()];
    // ROUNDS / ONLY (a substring of a design's name): to profile one design for long.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let only = std::env::var("ONLY").unwrap_or_default();
    for _round in 0..rounds {
        for (i, (name, run)) in runs.iter().enumerate() {
            if !name.contains(&only) {
                continue;
            }
            let n = 48;
            let t = Instant::now();
            run(n);
            best[i] = best[i].min(t.elapsed().as_secs_f64() / n as f64);
        }
    }
    let bytes = 2.0 * (H * P * N * 4) as f64;
    for (i, (name, _)) in runs.iter().enumerate() {
        println!(
            "{name:40} {:8.3} ms/step  {:6.2} GB/s of state",
            best[i] * 1e3,
            bytes / best[i] / 1e9
        );
    }
}
