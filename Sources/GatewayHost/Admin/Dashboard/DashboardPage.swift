
/// `/dashboard`: one self-contained page (no external assets, so it works
/// offline and under a strict network policy). The first numbers are
/// embedded in the page; after that it follows `/dashboard/events`
/// (Server-Sent Events, one update a second).
enum DashboardPage {
    static func html(initial json: String) -> String {
        // `</` cannot appear in the JSON's strings unescaped inside <script>.
        let embedded = json.split(separator: "</", omittingEmptySubsequences: false).joined(separator: "<\\/")
        return head + "<script>const initial = \(embedded);\n" + script + "</script></body></html>\n"
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
    <h2>Service health</h2><table><thead><tr><th>service</th><th>status</th></tr></thead><tbody id="services"></tbody></table>
    <h2>Endpoints (load over the last window)</h2>
    <table><thead><tr><th>cluster</th><th>endpoint</th><th>health</th><th>weight</th><th class="n">req/s</th><th>share</th><th class="n">in flight</th><th class="n">errors</th></tr></thead><tbody id="endpoints"></tbody></table>
    <h2>Methods</h2>
    <table><thead><tr><th>service</th><th>method</th><th class="n">req/s</th><th class="n">errors</th><th class="n">p50</th><th class="n">p90</th><th class="n">p99</th><th class="n">total</th></tr></thead><tbody id="methods"></tbody></table>
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
    function render(d) {
      updates += 1;
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
