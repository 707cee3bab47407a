// camportal index: every path this client may watch, with its state and viewers, from
// GET /_paths every 2 s.
'use strict';

(() => {
  const REFRESH_MS = 2000;
  // Thumbnails (each path's /<path>/frame.jpeg) are fetched again this often.
  const THUMB_MS = 5000;

  // Credentials in the page's URL (/?user=...&pass=...) go with each request and each link.
  const query = new URLSearchParams(location.search);
  const auth = query.has('user')
    ? { Authorization: 'Basic ' + btoa(unescape(encodeURIComponent(
      `${query.get('user')}:${query.get('pass') || ''}`))) }
    : {};
  const signIn = query.has('user') ? `?${new URLSearchParams({
    user: query.get('user'), pass: query.get('pass') || '' })}` : '';

  const rows = document.querySelector('#paths tbody');
  const empty = document.getElementById('empty');
  const configBox = document.getElementById('config-errors');
  const configList = configBox.querySelector('ul');
  const unreachable = document.getElementById('unreachable');
  const updated = document.getElementById('updated');

  // Builds an element; strings from the server only ever become text, never markup.
  function el(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  // One <img> per path, kept across refreshes so that a thumbnail does not flicker.
  const thumbs = new Map();

  function thumbnail(path) {
    let img = thumbs.get(path.name);
    if (!img) {
      img = el('img', { className: 'thumb', alt: `${path.name} now`, loading: 'lazy' });
      img.dataset.fetched = '0';
      thumbs.set(path.name, img);
    }
    const due = Date.now() - Number(img.dataset.fetched) >= THUMB_MS;
    if (path.state === 'running' && due) {
      img.dataset.fetched = String(Date.now());
      const query = new URLSearchParams(signIn.slice(1));
      query.set('t', img.dataset.fetched);
      img.src = `${path.url}frame.jpeg?${query}`;
    }
    return img;
  }

  function readers(path) {
    const r = path.readers || {};
    const parts = [['WebRTC', r.webrtc], ['RTSP', r.rtsp], ['MJPEG', r.mjpeg]]
      .filter(([, n]) => n > 0).map(([kind, n]) => `${n} ${kind}`);
    return parts.length ? parts.join(', ') : '0';
  }

  function pathRow(path) {
    let video = path.width && path.height
      ? `${path.width}×${path.height} @ ${path.fps} fps` : '–';
    // A camera's own H.264 cannot be asked for a keyframe: new viewers wait for its next one.
    if (path.sourceKeyframeIntervalMs) {
      video += `; new viewers wait up to ${(path.sourceKeyframeIntervalMs / 1000).toFixed(1)} s`;
    }
    return el('tr', { className: `state-${path.state}` },
      el('td', {}, thumbnail(path)),
      el('td', {}, el('a', { href: path.url + signIn, textContent: path.name })),
      el('td', {}, el('span', { className: `badge ${path.state}`, textContent: path.state })),
      el('td', { textContent: path.source }),
      el('td', { textContent: path.camera || '–' }),
      el('td', { textContent: path.format || '–' }),
      el('td', { textContent: video }),
      el('td', { textContent: path.bitrateKbps ? `${path.bitrateKbps} kb/s` : '–' }),
      el('td', { className: 'num', textContent: readers(path) }),
      el('td', { className: 'num', textContent: String(path.restarts) }),
      el('td', { className: 'error', textContent: errorText(path) }),
    );
  }

  // A broken file is worth saying even while the path runs on its last good configuration.
  function errorText(path) {
    if (!path.configError) return path.lastError || '';
    const running = path.state === 'failed' ? '' : ' (running on the last good configuration)';
    return `${path.configError}${running}`;
  }

  function configError(problem) {
    let where = problem.file;
    if (problem.line != null) where += `:${problem.line}`;
    if (problem.line != null && problem.column != null) where += `:${problem.column}`;
    return el('li', {}, el('code', { textContent: where }), ' ', problem.message);
  }

  function render(data) {
    const paths = data.paths || [];
    rows.replaceChildren(...paths.map(pathRow));
    for (const name of thumbs.keys()) {
      if (!paths.some((path) => path.name === name)) thumbs.delete(name);
    }
    empty.hidden = paths.length > 0;
    const problems = data.configErrors || [];
    configList.replaceChildren(...problems.map(configError));
    configBox.hidden = problems.length === 0;
  }

  async function refresh() {
    try {
      const response = await fetch('/_paths', { headers: auth, cache: 'no-store' });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      render(await response.json());
      unreachable.hidden = true;
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      // Keep the last table: it is still the best information there is.
      unreachable.textContent = `cannot reach camportal (${error.message}); retrying…`;
      unreachable.hidden = false;
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  refresh();
})();
