// camportal player: plays one path over WHEP (RFC 9725) and reconnects by itself, forever.
// Plain JavaScript, standard APIs only: it runs on kiosks without internet or a build step.
'use strict';

(() => {
  const FIRST_RETRY_MS = 250;
  const MAX_RETRY_MS = 5000;
  const DISCONNECTED_GRACE_MS = 2000; // ICE "disconnected" often recovers by itself
  // A session that stops receiving (the server restarted, say) is noticed by its media: no RTP
  // packet for STALL_MS (a live path sends at least 5 pictures a second, even "camera offline";
  // 1 fps paths only cost an extra question) makes the player ask the server whether the
  // session still exists; a path restarting keeps it, a restarted server does not know it.
  const WATCH_MS = 250;
  const STALL_MS = 1000;
  const PROBE_TIMEOUT_MS = 2000;
  // After a session was lost, while the server cannot be reached, the player asks every
  // ANSWER_POLL_MS whether it answers again (OPTIONS on the WHEP endpoint: nothing to set up)
  // and reconnects the moment it does, rather than at the next backoff step. Only for
  // ANSWER_WATCH_MS after the loss: a server that stays away is left to the backoff.
  const ANSWER_POLL_MS = 250;
  const ANSWER_WATCH_MS = 30000;
  const SETUP_TIMEOUT_MS = 15000; // POST + ICE + first frame
  const GOOD_AFTER_MS = 5000; // playing this long resets the backoff
  const DELETE_WAIT_MS = 1000;
  // The server sends each picture's capture time (wall clock, NTP) in this RTP header extension.
  const ABS_CAPTURE_TIME = 'http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time';
  const NTP_UNIX_OFFSET_MS = 2208988800000;

  // Query options, with MediaMTX's names: ?controls=true&muted=false&autoplay=false&stats=1
  const query = new URLSearchParams(location.search);
  const option = (name, fallback) => {
    const value = query.get(name);
    if (value === null) return fallback;
    return !['false', '0', 'no', 'off'].includes(value.toLowerCase());
  };
  const options = {
    controls: option('controls', false),
    muted: option('muted', true),
    autoplay: option('autoplay', true),
    stats: option('stats', false),
  };

  // A kiosk signs in from its URL (/<path>/?user=kiosk&pass=...), with no prompt: the page
  // itself was allowed by those, and every WHEP request carries them as HTTP Basic.
  // (A browser that signed in at a prompt sends its own credentials; nothing to add then.)
  const auth = query.has('user')
    ? { Authorization: 'Basic ' + btoa(unescape(encodeURIComponent(
      `${query.get('user')}:${query.get('pass') || ''}`))) }
    : {};

  // /<path>/ → the WHEP endpoint /<path>/whep.
  const base = location.pathname.endsWith('/') ? location.pathname : location.pathname + '/';
  const pathName = decodeURIComponent(base.replace(/^\/+|\/+$/g, ''));
  const whepUrl = new URL(base + 'whep', location.href).href;
  document.title = pathName ? `${pathName} · camportal` : 'camportal';

  const video = document.querySelector('video');
  const statusBox = document.getElementById('status');
  const statsBox = document.getElementById('stats');
  video.controls = options.controls;
  video.muted = options.muted;
  video.autoplay = options.autoplay;

  // What tests (and curious people) can read: window.camportal.state etc.
  const status = { state: 'connecting', reconnects: 0, lastError: null, latencyMs: null };
  Object.defineProperty(window, 'camportal', {
    value: Object.freeze({
      get state() { return status.state; },
      get reconnects() { return status.reconnects; },
      get lastError() { return status.lastError; },
      // With ?stats=1: median capture → display time over the last second, in ms.
      get latencyMs() { return status.latencyMs; },
    }),
  });

  // The server answered with an error: its plain-text reason is worth showing.
  class Unavailable extends Error {}
  // The server could not be reached at all.
  class Offline extends Error {}

  let session = null; // the current attempt: { pc, url, timers, … } (see connect)
  let retryDelay = FIRST_RETRY_MS;
  let retryTimer = null;
  // A session that was connected and died is retried at once; then failures back off
  // (FIRST_RETRY_MS … MAX_RETRY_MS) until a session plays for GOOD_AFTER_MS again.
  let quickRetryUsed = false;
  let lostAt = -Infinity; // when the last session that had played was lost (performance.now())
  let answerWatch = null; // the current watch for the server's answer, while one runs
  let countdownTimer = null;
  let goodTimer = null;
  let pendingDelete = Promise.resolve();

  function show(text) {
    statusBox.textContent = text;
    statusBox.hidden = !text;
  }

  function setState(state, text) {
    status.state = state;
    show(text);
  }

  // Ends the current session: close the peer connection and DELETE the session (best effort,
  // so the server frees it now rather than at its ICE timeout).
  function teardown() {
    const old = session;
    session = null;
    clearTimeout(goodTimer);
    if (!old) return;
    clearTimeout(old.setupTimer);
    clearTimeout(old.graceTimer);
    clearInterval(old.watchTimer);
    old.pc.ontrack = old.pc.onconnectionstatechange = null;
    old.pc.close();
    video.srcObject = null;
    if (old.url) deleteSession(old.url);
  }

  function deleteSession(url) {
    pendingDelete = fetch(url, { method: 'DELETE', headers: auth, keepalive: true }).catch(() => {});
  }

  // Ends `current` and schedules the next attempt. `lost`: the session was connected and died
  // (server restarted or gone), so the first retry goes at once.
  function fail(current, error, lost = false) {
    if (current !== session) return; // a stale attempt: already replaced
    teardown();
    const reason = error instanceof Error ? error.message : String(error);
    status.lastError = reason;
    let delay;
    if (lost && !quickRetryUsed) {
      quickRetryUsed = true;
      lostAt = performance.now();
      delay = 0;
    } else {
      delay = retryDelay;
      retryDelay = Math.min(retryDelay * 2, MAX_RETRY_MS);
    }
    const state = error instanceof Offline ? 'offline' : 'unavailable';
    const label = state === 'offline' ? `offline: ${reason}` : `stream unavailable: ${reason}`;
    const due = Date.now() + delay;
    const tick = () => {
      const seconds = Math.max(1, Math.ceil((due - Date.now()) / 1000));
      setState(state, `${label}, retrying in ${seconds} s`);
    };
    tick();
    clearInterval(countdownTimer);
    countdownTimer = setInterval(tick, 1000);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(reconnect, delay);
    if (state === 'offline' && delay > ANSWER_POLL_MS) watchForAnswer();
    console.warn(`camportal: ${label}; retrying in ${delay} ms`);
  }

  function reconnect() {
    status.reconnects += 1;
    connect();
  }

  // While waiting to retry a server that could not be reached: reconnect as soon as it answers.
  function watchForAnswer() {
    const watch = { timer: null, asking: false };
    stopWatchingForAnswer();
    answerWatch = watch;
    watch.timer = setInterval(async () => {
      if (watch.asking) return;
      if (performance.now() - lostAt >= ANSWER_WATCH_MS) {
        stopWatchingForAnswer();
        return;
      }
      watch.asking = true;
      const abort = new AbortController();
      const timeout = setTimeout(() => abort.abort(), PROBE_TIMEOUT_MS);
      const asked = fetch(whepUrl, {
        method: 'OPTIONS', headers: auth, cache: 'no-store', signal: abort.signal,
      });
      const answered = await asked.then(() => true, () => false);
      clearTimeout(timeout);
      watch.asking = false;
      if (answered && answerWatch === watch) reconnect();
    }, ANSWER_POLL_MS);
  }

  function stopWatchingForAnswer() {
    if (answerWatch) clearInterval(answerWatch.timer);
    answerWatch = null;
  }

  async function connect() {
    clearInterval(countdownTimer);
    clearTimeout(retryTimer);
    stopWatchingForAnswer();
    teardown();
    // Let the old session's DELETE go first, so a viewer limit is not hit by our own ghost.
    await Promise.race([pendingDelete, new Promise((done) => setTimeout(done, DELETE_WAIT_MS))]);

    const pc = new RTCPeerConnection();
    const current = {
      pc, url: null, setupTimer: null, graceTimer: null, receiver: null,
      watchTimer: null, connected: false, packets: -1, progressAt: 0, probing: false,
    };
    session = current;
    setState('connecting', 'connecting…');
    current.setupTimer = setTimeout(() => fail(current, new Error('timed out connecting')), SETUP_TIMEOUT_MS);

    askForCaptureTime(pc.addTransceiver('video', { direction: 'recvonly' }));
    pc.ontrack = (event) => {
      const track = event.track;
      current.receiver = event.receiver;
      video.srcObject = event.streams[0] || new MediaStream([track]);
      track.onended = () => fail(current, new Error('the video track ended'));
      // DTLS close_notify (the server closed the session) or a DTLS failure.
      const transport = event.receiver.transport;
      if (transport) {
        transport.onstatechange = () => {
          if (transport.state === 'closed' || transport.state === 'failed') {
            fail(current, new Error(`DTLS ${transport.state}`), current.connected);
          }
        };
      }
      // No media for a while (the camera is restarting, say): say so, keep the session.
      track.onmute = () => { if (session === current) setState('connecting', 'waiting for video…'); };
      track.onunmute = () => { if (session === current && !video.paused) playing(current); };
      if (options.autoplay) play(current);
    };
    pc.onconnectionstatechange = () => {
      switch (pc.connectionState) {
        case 'failed':
        case 'closed':
          fail(current, new Error(`connection ${pc.connectionState}`), current.connected);
          break;
        case 'disconnected':
          // Often recovers by itself; unless the server says the session is gone.
          probe(current);
          clearTimeout(current.graceTimer);
          current.graceTimer = setTimeout(() => {
            if (pc.connectionState !== 'disconnected') return;
            fail(current, new Error('connection lost'), true);
          }, DISCONNECTED_GRACE_MS);
          break;
        case 'connected':
          if (!current.connected) {
            current.connected = true;
            current.progressAt = performance.now();
            current.watchTimer = setInterval(() => watch(current), WATCH_MS);
          }
          if (!options.autoplay) paused(current);
          break;
      }
    };

    try {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      // No waiting for ICE gathering: the server answers with its own candidates and finds us
      // from our connectivity checks, so the offer needs none.
      let response;
      try {
        response = await fetch(whepUrl, {
          method: 'POST',
          headers: { 'Content-Type': 'application/sdp', ...auth },
          body: offer.sdp,
          cache: 'no-store',
        });
      } catch {
        throw new Offline('cannot reach the server');
      }
      if (!response.ok) {
        const reason = (await response.text()).trim();
        throw new Unavailable(reason || `HTTP ${response.status} ${response.statusText}`.trim());
      }
      const location = response.headers.get('Location');
      const url = location ? new URL(location, whepUrl).href : null;
      const answer = await response.text();
      if (session !== current) {
        // Given up on meanwhile (timeout, page hidden): end the session the server just made.
        if (url) deleteSession(url);
        return;
      }
      current.url = url;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    } catch (error) {
      fail(current, error);
    }
  }

  function play(current) {
    video.play().then(() => playing(current)).catch((error) => {
      if (session !== current) return;
      if (error.name === 'NotAllowedError' && !video.muted) {
        // The browser forbids sound without a click: play muted, offer to unmute.
        video.muted = true;
        video.play().then(() => {
          playing(current);
          offerClick(current, 'click for sound', () => { video.muted = false; });
        }).catch(() => paused(current));
      } else if (error.name !== 'AbortError') {
        paused(current);
      }
    });
  }

  function playing(current) {
    if (session !== current) return;
    setState('playing', '');
    clearTimeout(current.setupTimer);
    clearTimeout(goodTimer);
    goodTimer = setTimeout(() => {
      retryDelay = FIRST_RETRY_MS;
      quickRetryUsed = false;
    }, GOOD_AFTER_MS);
  }

  // RTP packets received so far by the session's video receiver, or null if unknown.
  async function packetsReceived(current) {
    const report = await (current.receiver || current.pc).getStats();
    let packets = null;
    report.forEach((entry) => {
      if (entry.type === 'inbound-rtp' && entry.kind === 'video') packets = entry.packetsReceived;
    });
    return packets;
  }

  // Every WATCH_MS while connected: no packet for STALL_MS → ask the server.
  async function watch(current) {
    if (session !== current || current.probing) return;
    let packets;
    try {
      packets = await packetsReceived(current);
    } catch {
      return; // closed meanwhile
    }
    if (session !== current) return;
    const now = performance.now();
    if (packets !== current.packets) {
      current.packets = packets;
      current.progressAt = now;
    } else if (now - current.progressAt >= STALL_MS) {
      probe(current);
    }
  }

  // Asks the server whether the session still exists (GET on its URL): gone or unreachable
  // ends it now; alive (a path restarting, a camera reopening) keeps it and asks again after
  // another STALL_MS of silence; any other answer (an older server) leaves it to ICE.
  async function probe(current) {
    if (session !== current || current.probing || !current.url) return;
    current.probing = true;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), PROBE_TIMEOUT_MS);
    let error = null;
    try {
      const response = await fetch(current.url, {
        headers: auth, cache: 'no-store', signal: abort.signal,
      });
      if (response.status === 404) error = new Unavailable('the server ended the session');
    } catch {
      error = new Offline('cannot reach the server');
    } finally {
      clearTimeout(timer);
      current.probing = false;
      current.progressAt = performance.now();
    }
    if (error) fail(current, error, true);
  }

  function paused(current) {
    if (session !== current) return;
    clearTimeout(current.setupTimer);
    status.state = 'paused';
    offerClick(current, 'click to play', () => play(current));
  }

  // Shows `text`; one click anywhere then runs `action` (unless the session was replaced).
  function offerClick(current, text, action) {
    show(text);
    document.addEventListener('click', () => {
      if (session !== current) return;
      show('');
      action();
    }, { once: true });
  }

  // Chromium can receive abs-capture-time but offers it only when asked; other browsers simply
  // go without (the stats then show no latency).
  function askForCaptureTime(transceiver) {
    if (!transceiver.getHeaderExtensionsToNegotiate || !transceiver.setHeaderExtensionsToNegotiate) return;
    try {
      const extensions = transceiver.getHeaderExtensionsToNegotiate();
      for (const extension of extensions) {
        if (extension.uri === ABS_CAPTURE_TIME && extension.direction === 'stopped') {
          extension.direction = 'recvonly';
        }
      }
      transceiver.setHeaderExtensionsToNegotiate(extensions);
    } catch (error) {
      console.debug('camportal: cannot ask for abs-capture-time', error);
    }
  }

  // Capture → display time of the picture just shown, in ms, or null if the browser does not
  // know the capture time. The synchronization source describes the newest picture received;
  // its RTP timestamp (90 kHz, from the same capture clock) steps back to the one shown. Assumes
  // the server's and this machine's clocks agree (NTP).
  function frameLatency(receiver, metadata) {
    const source = receiver.getSynchronizationSources()[0];
    if (!source || source.captureTimestamp === undefined || metadata.rtpTimestamp === undefined) {
      return null;
    }
    const behindMs = ((source.rtpTimestamp - metadata.rtpTimestamp) | 0) / 90;
    const captured = source.captureTimestamp - NTP_UNIX_OFFSET_MS - behindMs;
    return performance.timeOrigin + metadata.expectedDisplayTime - captured;
  }

  // Latencies of the pictures shown in the last second: [displayed at, ms].
  let latencies = [];
  function watchFrames() {
    if (!video.requestVideoFrameCallback) return;
    const onFrame = (now, metadata) => {
      const receiver = session && session.receiver;
      const latency = receiver ? frameLatency(receiver, metadata) : null;
      if (latency !== null) latencies.push([now, latency]);
      latencies = latencies.filter(([at]) => at > now - 1000);
      const sorted = latencies.map(([, ms]) => ms).sort((a, b) => a - b);
      status.latencyMs = sorted.length ? sorted[sorted.length >> 1] : null;
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  // ?stats=1: the receiver's own view, once a second.
  let lastBytes = null;
  async function showStats() {
    if (!session) { statsBox.textContent = 'no session'; return; }
    const report = await session.pc.getStats();
    let inbound = null;
    report.forEach((entry) => {
      if (entry.type === 'inbound-rtp' && entry.kind === 'video') inbound = entry;
    });
    if (!inbound) { statsBox.textContent = 'no video yet'; return; }
    const kbps = lastBytes === null ? 0 : Math.max(0, inbound.bytesReceived - lastBytes) * 8 / 1000;
    lastBytes = inbound.bytesReceived;
    const jitterMs = inbound.jitterBufferEmittedCount
      ? (1000 * inbound.jitterBufferDelay) / inbound.jitterBufferEmittedCount : 0;
    statsBox.textContent = [
      `resolution      ${inbound.frameWidth || 0}×${inbound.frameHeight || 0}`,
      `fps             ${inbound.framesPerSecond || 0}`,
      `framesDecoded   ${inbound.framesDecoded || 0}`,
      `framesDropped   ${inbound.framesDropped || 0}`,
      `packetsLost     ${inbound.packetsLost || 0}`,
      `jitterBuffer    ${jitterMs.toFixed(0)} ms`,
      `bitrate         ${kbps.toFixed(0)} kb/s`,
      `latency         ${status.latencyMs === null ? 'unknown' : `${status.latencyMs.toFixed(0)} ms`} (capture → display)`,
      `reconnects      ${status.reconnects}`,
    ].join('\n');
  }
  if (options.stats) {
    statsBox.hidden = false;
    setInterval(() => showStats().catch(() => {}), 1000);
    watchFrames();
  }

  // Leaving the page ends the session on the server at once (keepalive outlives the page).
  window.addEventListener('pagehide', () => {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    stopWatchingForAnswer();
    teardown();
  });
  window.addEventListener('pageshow', (event) => { if (event.persisted) connect(); });
  video.addEventListener('playing', () => { if (session) playing(session); });
  if (window.RTCPeerConnection) {
    connect();
  } else {
    setState('unavailable', 'this browser cannot play WebRTC');
  }
})();
