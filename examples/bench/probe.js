// Injected by the benchmark into the player page before the page's own script runs. Records, in
// window.__bench:
// - postAt: when the player POSTed its WHEP offer, firstFrameAt: when its first frame was
//   presented (requestVideoFrameCallback), both on the page's performance clock; between them,
//   for the breakdown of that time: answerAt (the POST's response arrived), iceConnectedAt
//   (iceConnectionState "connected"), connectedAt (connectionState "connected": DTLS done too)
//   and firstReceivedAt (the first frame's last packet received: requestVideoFrameCallback's
//   receiveTime);
// - while `measuring` is true, per presented frame: latency = presentation (expectedDisplayTime,
//   on the wall clock) minus the capture time in the picture's stamp (src/stamp.rs, read from
//   the pixels), in ms.
'use strict';

(() => {
  const probe = {
    postAt: null,
    answerAt: null,
    iceConnectedAt: null,
    connectedAt: null,
    firstReceivedAt: null,
    firstFrameAt: null,
    measuring: false,
    latencies: [],
    unstamped: 0,
    frames: 0,
  };
  window.__bench = probe;

  const originalFetch = window.fetch.bind(window);
  window.fetch = (input, init) => {
    const offer = probe.postAt === null && init && init.method === 'POST';
    if (offer) probe.postAt = performance.now();
    const response = originalFetch(input, init);
    if (offer) {
      response.then(
        () => {
          probe.answerAt = performance.now();
        },
        () => {},
      );
    }
    return response;
  };

  const OriginalPeerConnection = window.RTCPeerConnection;
  const firstTime = (key) => {
    if (probe[key] === null) probe[key] = performance.now();
  };
  window.RTCPeerConnection = function (...args) {
    const pc = new OriginalPeerConnection(...args);
    pc.addEventListener('iceconnectionstatechange', () => {
      if (pc.iceConnectionState === 'connected') firstTime('iceConnectedAt');
    });
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected') firstTime('connectedAt');
    });
    return pc;
  };
  window.RTCPeerConnection.prototype = OriginalPeerConnection.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, OriginalPeerConnection);

  // CRC-32 (zlib), as the stamp uses.
  const CRC_TABLE = (() => {
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();
  function crc32(bytes) {
    let c = 0xffffffff;
    for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }

  // The stamp's layout (see src/stamp.rs): 144 bits in square cells at the top of the picture.
  function geometry(width, height) {
    const block = Math.max(8, 8 * Math.floor(width / 640));
    const columns = Math.min(80, Math.floor(width / block));
    if (columns === 0) return null;
    const rows = Math.ceil(144 / columns);
    if (rows * block > Math.floor(height / 2)) return null;
    return { block, columns, rows };
  }

  // Returns { frame, unixMs } or null.
  function readStamp(context, width, height) {
    const g = geometry(width, height);
    if (!g) return null;
    const band = g.rows * g.block;
    const pixels = context.getImageData(0, 0, width, band).data;
    const inner = g.block >> 1;
    const off = g.block >> 2;
    const bytes = new Uint8Array(18);
    for (let i = 0; i < 144; i++) {
      const x0 = (i % g.columns) * g.block + off;
      const y0 = Math.floor(i / g.columns) * g.block + off;
      let sum = 0;
      for (let y = y0; y < y0 + inner; y++) {
        for (let x = x0; x < x0 + inner; x++) sum += pixels[(y * width + x) * 4 + 1];
      }
      if (sum >= 128 * inner * inner) bytes[i >> 3] |= 0x80 >> (i & 7);
    }
    if (bytes[0] !== 0x43 || bytes[1] !== 0x50) return null;
    const view = new DataView(bytes.buffer);
    if (crc32(bytes.subarray(0, 14)) !== view.getUint32(14)) return null;
    const micros = view.getUint32(6) * 4294967296 + view.getUint32(10);
    return { frame: view.getUint32(2), unixMs: micros / 1000 };
  }

  document.addEventListener('DOMContentLoaded', () => {
    const video = document.querySelector('video');
    const canvas = document.createElement('canvas');
    const context = canvas.getContext('2d', { willReadFrequently: true });
    const onFrame = (now, metadata) => {
      if (probe.firstFrameAt === null) {
        probe.firstFrameAt = metadata.presentationTime;
        probe.firstReceivedAt = metadata.receiveTime ?? null;
      }
      probe.frames += 1;
      if (probe.measuring) {
        const { width, height } = metadata;
        const g = geometry(width, height);
        if (g) {
          const band = g.rows * g.block;
          if (canvas.width !== width || canvas.height !== band) {
            canvas.width = width;
            canvas.height = band;
          }
          // Inside the callback, drawImage draws the frame being presented.
          context.drawImage(video, 0, 0, width, band, 0, 0, width, band);
        }
        const stamp = g ? readStamp(context, width, height) : null;
        if (stamp) {
          probe.latencies.push(performance.timeOrigin + metadata.expectedDisplayTime - stamp.unixMs);
        } else {
          probe.unstamped += 1;
        }
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  });
})();
