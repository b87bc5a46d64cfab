import GatewayHost


/// `/dashboard`: one self-contained page (no external assets, so it works
/// offline and under a strict network policy). The first numbers are
/// embedded in the page; after that it follows `/dashboard/events`
/// (Server-Sent Events, one update a second).
package enum DashboardPage {
    package static func html(initial json: String) -> String {
        head + "<script>const initial = \(scriptSafe(json));\n" + script + "</script></body></html>\n"
    }

    /// JSON that can stand inside a `<script>` element whatever its strings
    /// hold (method names come from clients): `<`, `>` and `&` written as
    /// JSON escapes, the same string to the script, so that neither `</script>`
    /// nor `<!--<script>` (which would make the HTML parser skip the real
    /// `</script>`) can appear. Outside strings JSON has none of the three.
    package static func scriptSafe(_ json: String) -> String {
        var out = [UInt8]()
        out.reserveCapacity(json.utf8.count)
        for byte in json.utf8 {
            switch byte {
            case UInt8(ascii: "<"): out += Array("\\u003c".utf8)
            case UInt8(ascii: ">"): out += Array("\\u003e".utf8)
            case UInt8(ascii: "&"): out += Array("\\u0026".utf8)
            default: out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static let head = """
    <!doctype html>
    <html lang="en"><head><meta charset="utf-8"><title>Meshgate dashboard</title>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <style>
    body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#0f1419;color:#e6e6e6}
    header{padding:12px 20px;background:#1a2129;display:flex;justify-content:space-between;align-items:center}
    h1{font-size:18px;margin:0} h2{font-size:15px;margin:20px 0 8px}
    main{padding:0 20px 20px}
    .tiles{display:flex;gap:12px;flex-wrap:wrap;margin-top:16px}
    .tile{background:#1a2129;border-radius:8px;padding:12px 16px;min-width:130px}
    .tile .v{font-size:26px;font-weight:600} .tile .l{color:#9aa5b1;font-size:12px;text-transform:uppercase}
    table{border-collapse:collapse;width:100%;background:#1a2129;border-radius:8px;overflow:hidden}
    th,td{padding:6px 10px;text-align:left;border-bottom:1px solid #27313b} th{color:#9aa5b1;font-weight:500}
    td.n{text-align:right;font-variant-numeric:tabular-nums}
    .pill{padding:2px 8px;border-radius:10px;font-size:12px;font-weight:600}
    .ok{background:#1f6f43} .bad{background:#9b2c2c} .warn{background:#8a6d1a}
    .bar{background:#27313b;border-radius:4px;height:10px;width:160px} .bar div{background:#3b82f6;height:10px;border-radius:4px}
    #status{color:#9aa5b1;font-size:12px}
    .charts{display:flex;gap:12px;flex-wrap:wrap}
    .chart{background:#1a2129;border-radius:8px;padding:6px 8px}
    .chart .l{color:#9aa5b1;font-size:12px} .chart svg text{fill:#9aa5b1;font-size:10px}
    .eprow{display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin-bottom:8px}
    .eprow .name{min-width:200px;font-size:13px}
    .legend span{margin-right:10px;font-size:12px} .sw{display:inline-block;width:10px;height:3px;vertical-align:middle;margin-right:4px}
    #events li{list-style:none;padding:4px 0;border-bottom:1px solid #27313b;font-size:13px} #events{padding:0;margin:0;background:#1a2129;border-radius:8px;padding:4px 10px}
    #events .t{color:#9aa5b1;margin-right:8px;font-variant-numeric:tabular-nums} #events .f{color:#9aa5b1;margin-left:8px;font-size:12px}
    code{font-size:12px;color:#c9d1d9}
    </style></head><body>
    <header><h1>Meshgate</h1><span id="status">waiting for data</span></header>
    <main>
    <div class="tiles">
    <div class="tile"><div class="v" id="rate">-</div><div class="l">requests / s</div></div>
    <div class="tile"><div class="v" id="errors">-</div><div class="l">error rate</div></div>
    <div class="tile"><div class="v" id="p50">-</div><div class="l">p50 latency</div></div>
    <div class="tile"><div class="v" id="p99">-</div><div class="l">p99 latency</div></div>
    <div class="tile"><div class="v" id="active">-</div><div class="l">calls in flight</div></div>
    <div class="tile"><div class="v" id="conns">-</div><div class="l">client connections</div></div>
    </div>
    <h2>Last 10 minutes</h2>
    <div class="charts" id="gateway-charts"></div>
    <h2>Endpoints over time <span class="legend"><span><i class="sw" style="background:#9b2c2c"></i>unhealthy</span><span><i class="sw" style="background:#d69e2e"></i>ejected</span></span></h2>
    <div id="endpoint-charts"></div>
    <h2>Events</h2><ul id="events"></ul>
    <h2>Service health</h2><table><thead><tr><th>service</th><th>status</th></tr></thead><tbody id="services"></tbody></table>
    <h2>Endpoints (load over the last window)</h2>
    <table><thead><tr><th>cluster</th><th>endpoint</th><th>health</th><th>weight</th><th class="n">req/s</th><th>share</th><th class="n">in flight</th><th class="n">errors</th></tr></thead><tbody id="endpoints"></tbody></table>
    <h2>Methods</h2>
    <table><thead><tr><th>service</th><th>method</th><th class="n">req/s</th><th class="n">errors</th><th class="n">p50</th><th class="n">p90</th><th class="n">p99</th><th class="n">total</th></tr></thead><tbody id="methods"></tbody></table>
    <h2>Routes</h2>
    <table><thead><tr><th>listener</th><th>match</th><th>cluster</th><th>filter chain</th><th class="n">req/s</th><th class="n">errors</th></tr></thead><tbody id="routes"></tbody></table>
    <h2>Discovery</h2>
    <table><thead><tr><th>cluster</th><th>source</th><th>state</th><th class="n">endpoints</th><th class="n">failures</th></tr></thead><tbody id="discovery"></tbody></table>
    </main>

    """

    private static let script = """
    let updates = 0;
    const esc = s => String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
    const ms = v => v == null ? '-' : (v < 10 ? v.toFixed(2) : v.toFixed(0)) + ' ms';
    const pct = v => (v * 100).toFixed(v < 0.1 ? 2 : 1) + ' %';
    const num = v => v < 10 ? v.toFixed(1) : v.toFixed(0);
    const pill = (good, text) => `<span class="pill ${good ? 'ok' : 'bad'}">${esc(text)}</span>`;
    // The time series, column-wise as the server sends it; each update
    // appends its newest point (kept to 10 minutes).
    const series = {t: [], rate: [], err: [], p50_ms: [], p99_ms: [], in_flight: [], endpoints: {}};
    const KEEP = 600;
    function append(s) {
      const n = series.t.length;
      for (const k of ['t', 'rate', 'err', 'p50_ms', 'p99_ms', 'in_flight']) series[k].push(...s[k]);
      for (const id of Object.keys(s.endpoints)) {
        if (!series.endpoints[id]) series.endpoints[id] = {rate: Array(n).fill(null), err: Array(n).fill(null), in_flight: Array(n).fill(null), state: Array(n).fill(null)};
      }
      for (const [id, e] of Object.entries(series.endpoints)) {
        const add = s.endpoints[id];
        for (const k of ['rate', 'err', 'in_flight', 'state']) e[k].push(...(add ? add[k] : Array(s.t.length).fill(null)));
      }
      const extra = series.t.length - KEEP;
      if (extra > 0) {
        for (const k of ['t', 'rate', 'err', 'p50_ms', 'p99_ms', 'in_flight']) series[k].splice(0, extra);
        for (const e of Object.values(series.endpoints)) for (const k of ['rate', 'err', 'in_flight', 'state']) e[k].splice(0, extra);
      }
    }
    const clock = s => new Date(s * 1000).toLocaleTimeString([], {hour12: false});
    // A line chart as SVG: lines [{v, color}], bands from a state column
    // (1 unhealthy, 2 ejected) drawn behind them.
    function chart(label, t, lines, opt = {}) {
      const W = opt.w || 420, H = opt.h || 110, L = 40, R = 6, T = 8, B = 16;
      const n = t.length;
      let max = opt.max || 0;
      for (const line of lines) for (const v of line.v) if (v != null && v > max) max = v;
      max = max > 0 ? max * 1.1 : 1;
      const t0 = n ? t[0] : 0, t1 = n ? Math.max(t[n - 1], t0 + 1) : 1;
      const x = i => (L + (t[i] - t0) / (t1 - t0) * (W - L - R)).toFixed(1);
      const y = v => (T + (1 - v / max) * (H - T - B)).toFixed(1);
      let svg = `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}">`;
      if (opt.state) {
        // One band per run of the same state (1 unhealthy, 2 ejected).
        for (let i = 0; i < n;) {
          const s = opt.state[i];
          let j = i + 1;
          while (j < n && opt.state[j] === s) j++;
          if (s === 1 || s === 2) {
            const x0 = +x(i), x1 = j < n ? +x(j) : W - R;
            svg += `<rect class="band ${s === 2 ? 'ejected' : 'unhealthy'}" x="${x0}" y="${T}" width="${Math.max(x1 - x0, 1).toFixed(1)}" height="${H - T - B}" fill="${s === 2 ? '#d69e2e' : '#9b2c2c'}" fill-opacity="0.45"/>`;
          }
          i = j;
        }
      }
      svg += `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#27313b"/>`;
      let points = 0;
      for (const line of lines) {
        let d = '', pen = false;
        line.v.forEach((v, i) => {
          if (v == null) { pen = false; return; }
          d += (pen ? 'L' : 'M') + x(i) + ' ' + y(v); pen = true; points += 1;
        });
        if (d) svg += `<path class="line" d="${d}" stroke="${line.color}" stroke-width="1.5" fill="none"/>`;
      }
      const fmt = opt.fmt || (v => v < 10 ? v.toFixed(1) : v.toFixed(0));
      svg += `<text x="2" y="${T + 8}">${fmt(max / 1.1)}</text><text x="2" y="${H - B}">0</text>`;
      if (n) svg += `<text x="${L}" y="${H - 3}">${clock(t0)}</text><text x="${W - R - 44}" y="${H - 3}">${clock(t1)}</text>`;
      svg += '</svg>';
      const legend = lines.length > 1 ? '<span class="legend">' + lines.map(l => `<span><i class="sw" style="background:${l.color}"></i>${l.name}</span>`).join('') + '</span>' : '';
      return `<div class="chart" data-points="${points}"><div class="l">${esc(label)} ${legend}</div>${svg}</div>`;
    }
    const percent = v => v == null ? null : v * 100;
    function drawCharts() {
      const s = series;
      document.getElementById('gateway-charts').innerHTML =
        chart('requests / s', s.t, [{v: s.rate, color: '#3b82f6'}]) +
        chart('error rate %', s.t, [{v: s.err.map(percent), color: '#e53e3e'}], {fmt: v => v.toFixed(1)}) +
        chart('latency ms', s.t, [{v: s.p50_ms, color: '#38a169', name: 'p50'}, {v: s.p99_ms, color: '#d69e2e', name: 'p99'}]) +
        chart('calls in flight', s.t, [{v: s.in_flight, color: '#805ad5'}]);
      document.getElementById('endpoint-charts').innerHTML = Object.entries(s.endpoints).map(([id, e]) =>
        `<div class="eprow" data-endpoint="${esc(id)}"><div class="name">${esc(id)}</div>` +
        chart('requests / s', s.t, [{v: e.rate, color: '#3b82f6'}], {w: 300, h: 80, state: e.state}) +
        chart('error rate %', s.t, [{v: e.err.map(percent), color: '#e53e3e'}], {w: 300, h: 80, state: e.state, fmt: v => v.toFixed(1)}) +
        chart('in flight', s.t, [{v: e.in_flight, color: '#805ad5'}], {w: 300, h: 80, state: e.state}) + '</div>').join('');
    }
    function render(d) {
      updates += 1;
      append(d.series);
      drawCharts();
      document.getElementById('events').innerHTML = d.events.length ? d.events.slice().reverse().map(e =>
        `<li data-kind="${e.kind}"><span class="t">${clock(e.time)}</span><span class="pill ${e.message.includes('unhealthy') || e.message.includes('ejected') || e.message.includes('failed') || e.message.includes('refused') || e.message.includes('not reloaded') ? 'bad' : 'ok'}">${esc(e.kind)}</span> ${esc(e.message)}` +
        `<span class="f">${Object.entries(e.fields).map(([k, v]) => esc(k + '=' + v)).join(' ')}</span></li>`).join('') : '<li>no events yet</li>';
      document.getElementById('routes').innerHTML = d.routes.map(r =>
        `<tr><td>${esc(r.listener)}</td><td>${esc(r.match)}</td><td>${esc(r.cluster)}</td><td>${r.chain.map(c => `<code>${esc(c)}</code>`).join(' → ')}</td>` +
        `<td class="n">${num(r.rate)}</td><td class="n">${pct(r.error_ratio)}</td></tr>`).join('');
      document.getElementById('rate').textContent = num(d.rate);
      document.getElementById('errors').textContent = pct(d.error_ratio);
      document.getElementById('p50').textContent = ms(d.p50_ms);
      document.getElementById('p99').textContent = ms(d.p99_ms);
      document.getElementById('active').textContent = d.active_calls;
      document.getElementById('conns').textContent = d.connections;
      document.getElementById('services').innerHTML = d.services.map(s =>
        `<tr><td>${esc(s.name)}</td><td>${pill(s.status === 'serving', s.status)}</td></tr>`).join('');
      document.getElementById('endpoints').innerHTML = d.endpoints.map(e =>
        `<tr><td>${esc(e.cluster)}</td><td>${esc(e.address)}</td><td>${e.ejected ? '<span class="pill warn">ejected</span>' : pill(e.healthy, e.healthy ? 'healthy' : 'unhealthy')}</td>` +
        `<td>${e.weight}</td><td class="n">${num(e.rate)}</td><td><div class="bar"><div style="width:${(e.share * 100).toFixed(1)}%"></div></div> ${pct(e.share)}</td>` +
        `<td class="n">${e.in_flight}</td><td class="n">${pct(e.error_ratio)}</td></tr>`).join('');
      document.getElementById('methods').innerHTML = d.methods.map(m =>
        `<tr><td>${esc(m.service)}</td><td>${esc(m.method)}</td><td class="n">${num(m.rate)}</td><td class="n">${pct(m.error_ratio)}</td>` +
        `<td class="n">${ms(m.p50_ms)}</td><td class="n">${ms(m.p90_ms)}</td><td class="n">${ms(m.p99_ms)}</td><td class="n">${m.total}</td></tr>`).join('');
      document.getElementById('discovery').innerHTML = d.discovery.length ? d.discovery.map(x =>
        `<tr><td>${esc(x.cluster)}</td><td>${esc(x.source)}</td><td>${pill(x.ok, x.ok ? 'ok' : 'failing')}</td><td class="n">${x.endpoints}</td><td class="n">${x.failures}</td></tr>`).join('')
        : '<tr><td colspan="5">static endpoints only</td></tr>';
      const at = new Date(d.at * 1000).toLocaleTimeString();
      const status = document.getElementById('status');
      status.textContent = `updated ${at} · window ${d.window_s.toFixed(1)} s · updates ${updates}`;
      status.dataset.updates = updates;
    }
    render(initial);
    const events = new EventSource('/dashboard/events');
    events.onmessage = e => render(JSON.parse(e.data));
    events.onerror = () => { document.getElementById('status').textContent += ' · reconnecting'; };

    """
}
