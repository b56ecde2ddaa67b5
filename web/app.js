// fastnst in the browser: the shipped ONNX models run by onnxruntime-web (WebGPU, or WebAssembly with
// threads and SIMD). Models take and give float32 N x 3 x H x W RGB in [0, 1]; strength and preserve
// colour are applied here as the command line applies them (fastnst/inference.py, fastnst/images.py).

const ORT_VERSION = "1.30.0";
const ORT_CDN = `https://cdn.jsdelivr.net/npm/onnxruntime-web@${ORT_VERSION}/dist/ort.all.min.mjs`;

const $ = (id) => document.getElementById(id);
const state = { ort: null, models: [], sessions: new Map(), photo: null, webcam: null, busy: false };

function showError(message) {
  $("error").textContent = message;
}

function showStatus(message) {
  $("status").textContent = message;
}

async function loadOrt() {
  let url = ORT_CDN; // `fastnst web --ort DIR` serves a local copy and says so in config.json
  try {
    const response = await fetch("config.json");
    if (response.ok) url = (await response.json()).ort || url;
  } catch (e) { /* a static site: the CDN */ }
  const ort = await import(url);
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  return ort;
}

function providers() {
  const backend = $("backend").value;
  if (backend === "webgpu") return ["webgpu"];
  if (backend === "wasm") return ["wasm"];
  return navigator.gpu ? ["webgpu", "wasm"] : ["wasm"];
}

async function session(model) {
  const eps = providers();
  const key = `${model.file}|${eps.join(",")}`;
  if (!state.sessions.has(key)) {
    const created = state.ort.InferenceSession.create(model.file, { executionProviders: eps });
    state.sessions.set(key, created);
    created.catch(() => state.sessions.delete(key));
  }
  return state.sessions.get(key);
}

function selectedModel() {
  return state.models.find((m) => m.name === $("model").value);
}

// Pixels (RGBA bytes) -> float32 1 x 3 x H x W in [0, 1], and back.
function toTensor(data, width, height) {
  const n = width * height, x = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    x[i] = data[4 * i] / 255; x[n + i] = data[4 * i + 1] / 255; x[2 * n + i] = data[4 * i + 2] / 255;
  }
  return x;
}

// Luma of the stylized image with the chroma of the input (BT.601 YCbCr), then the blend with the input.
function finish(out, input, n, preserveColor, strength) {
  const pixels = new Uint8ClampedArray(4 * n);
  for (let i = 0; i < n; i++) {
    let r = out[i], g = out[n + i], b = out[2 * n + i];
    const r0 = input[i], g0 = input[n + i], b0 = input[2 * n + i];
    if (preserveColor) {
      const y = 0.299 * r + 0.587 * g + 0.114 * b;
      const cb = -0.168736 * r0 - 0.331264 * g0 + 0.5 * b0, cr = 0.5 * r0 - 0.418688 * g0 - 0.081312 * b0;
      r = y + 1.402 * cr; g = y - 0.344136 * cb - 0.714136 * cr; b = y + 1.772 * cb;
      r = Math.min(1, Math.max(0, r)); g = Math.min(1, Math.max(0, g)); b = Math.min(1, Math.max(0, b));
    }
    if (strength < 1) {
      r = strength * r + (1 - strength) * r0; g = strength * g + (1 - strength) * g0; b = strength * b + (1 - strength) * b0;
    }
    pixels[4 * i] = r * 255; pixels[4 * i + 1] = g * 255; pixels[4 * i + 2] = b * 255;  // clamped, rounded
    pixels[4 * i + 3] = 255;
  }
  return pixels;
}

// Draw `source` (an image or video frame) on the input canvas, its long side at most --max-size.
function drawInput(source, width, height) {
  const limit = Math.max(16, Number($("max-size").value) || 1024);
  const scale = Math.min(1, limit / Math.max(width, height));
  const canvas = $("input");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  canvas.getContext("2d").drawImage(source, 0, 0, canvas.width, canvas.height);
  return canvas;
}

async function stylizeCanvas(canvas) {
  const model = selectedModel();
  const { width, height } = canvas;
  const data = canvas.getContext("2d", { willReadFrequently: true }).getImageData(0, 0, width, height).data;
  const input = toTensor(data, width, height);
  const s = await session(model);
  const t0 = performance.now();
  const result = await s.run({ [s.inputNames[0]]: new state.ort.Tensor("float32", input, [1, 3, height, width]) });
  const output = result[s.outputNames[0]];
  const out = output.location === "cpu" ? output.data : await output.getData();
  const ms = performance.now() - t0;
  const pixels = finish(out, input, width * height, $("preserve-color").checked, Number($("strength").value));
  const target = $("output");
  target.width = width; target.height = height;
  target.getContext("2d").putImageData(new ImageData(pixels, width, height), 0, 0);
  state.lastRun = { ms, width, height, model: model.name };
  return ms;
}

async function run(label) {
  if (!state.photo || state.busy) return;
  state.busy = true;
  showError("");
  try {
    const canvas = drawInput(state.photo, state.photo.width, state.photo.height);
    showStatus(`stylizing ${canvas.width}x${canvas.height} with ${$("model").value}...`);
    const ms = await stylizeCanvas(canvas);
    showStatus(`${label}: ${canvas.width}x${canvas.height} with ${$("model").value} in ${ms.toFixed(0)} ms`);
    $("output").toBlob((blob) => {
      const link = $("download");
      if (link.href) URL.revokeObjectURL(link.href);
      link.href = URL.createObjectURL(blob);
      link.download = `stylized_${$("model").value}.png`;
      link.hidden = false;
    }, "image/png");
    document.body.dataset.state = "done";
  } catch (e) {
    showError(`Could not stylize with ${$("model").value}: ${e.message || e}`);
    document.body.dataset.state = "error";
  } finally {
    state.busy = false;
  }
}

async function openFile(file) {
  stopWebcam();
  try {
    state.photo = await createImageBitmap(file);
  } catch (e) {
    state.photo = null;
    showStatus("");
    showError(`${file.name} is not an image this browser can read.`);
    document.body.dataset.state = "error";
    return;
  }
  await run(file.name);
}

async function startWebcam() {
  if (state.webcam) return stopWebcam();
  const video = $("video");
  try {
    state.webcam = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (e) {
    return showError(`No webcam: ${e.message || e}`);
  }
  video.srcObject = state.webcam;
  await video.play();
  video.hidden = false;
  $("input").hidden = true;
  $("webcam").textContent = "Stop webcam";
  let fps = 0, last = performance.now();
  const frame = async () => {
    if (!state.webcam) return;
    try {
      await stylizeCanvas(drawInput(video, video.videoWidth, video.videoHeight));
      const now = performance.now();
      fps = fps ? 0.9 * fps + 0.1 * (1000 / (now - last)) : 1000 / (now - last);
      last = now;
      showStatus(`webcam: ${fps.toFixed(1)} frames/s`);
    } catch (e) {
      showError(`Webcam stylizing failed: ${e.message || e}`);
      return stopWebcam();
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

function stopWebcam() {
  if (!state.webcam) return;
  state.webcam.getTracks().forEach((t) => t.stop());
  state.webcam = null;
  $("video").hidden = true;
  $("input").hidden = false;
  $("webcam").textContent = "Webcam";
}

// Timing of the network alone, for benchmarks: `runs` runs on a size x size input after a warm-up.
async function benchmark(name, size, runs = 5) {
  const model = state.models.find((m) => m.name === name);
  const s = await session(model);
  const x = new state.ort.Tensor("float32", new Float32Array(3 * size * size).fill(0.5), [1, 3, size, size]);
  await s.run({ [s.inputNames[0]]: x });
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await s.run({ [s.inputNames[0]]: x });
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
}

async function main() {
  if (typeof WebAssembly !== "object") {
    showError("This browser has no WebAssembly: the models cannot run here.");
    document.body.dataset.state = "error";
    return;
  }
  try {
    state.ort = await loadOrt();
  } catch (e) {
    showError(`Could not load onnxruntime-web ${ORT_VERSION}: ${e.message || e}`);
    document.body.dataset.state = "error";
    return;
  }
  try {
    state.models = await (await fetch("models.json")).json();
  } catch (e) {
    showError("Could not read models.json: no models to choose from.");
    document.body.dataset.state = "error";
    return;
  }
  for (const m of state.models) {
    const option = new Option(`${m.name} (${m.precision}, ${m.megabytes.toFixed(1)} MB)`, m.name);
    option.title = m.licence;
    $("model").add(option);
  }
  $("strength").addEventListener("input", () => { $("strength-value").textContent = $("strength").value; });
  for (const id of ["model", "strength", "preserve-color", "max-size", "backend"]) {
    $(id).addEventListener("change", () => run("updated"));
  }
  $("file").addEventListener("change", () => $("file").files[0] && openFile($("file").files[0]));
  $("webcam").addEventListener("click", startWebcam);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) openFile(e.dataTransfer.files[0]);
  });
  showStatus(`ready: ${state.models.length} models; threads ${state.ort.env.wasm.numThreads}` +
             (navigator.gpu ? "; WebGPU available" : "; WebAssembly"));
  document.body.dataset.state = "ready";
}

window.fastnst = { benchmark, state, ready: main() };
