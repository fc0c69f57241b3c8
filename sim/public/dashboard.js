// Live dashboard: one EventSource, uPlot charts updated in place (no page reload).
/* global uPlot, EventSource, document, window */
(() => {
  const width = () => Math.min(640, window.innerWidth - 80);
  const time = { time: true };
  const charts = {};
  function chart(id, series, opts = {}) {
    if (!charts[id]) {
      charts[id] = new uPlot(
        { width: width(), height: 220, scales: { x: time }, series: [{}, ...series], ...opts },
        [[]].concat(series.map(() => [])),
        document.getElementById(id),
      );
    }
    return charts[id];
  }
  const text = (id, value) => {
    document.getElementById(id).textContent = value;
  };
  function rows(id, items, cells) {
    const body = document.querySelector(`#${id} tbody`);
    body.replaceChildren(
      ...items.map((item) => {
        const tr = document.createElement('tr');
        for (const c of cells(item)) {
          const td = document.createElement('td');
          td.textContent = String(c);
          tr.append(td);
        }
        return tr;
      }),
    );
  }
  function render(s) {
    text('simTime', s.simTime.replace('T', ' ').slice(0, 16));
    text('speed', s.speed);
    text('households', s.households);
    const att = document.getElementById('attestation');
    att.className = `status-${s.attestation.status}`;
    att.textContent = `${s.attestation.status}: ${s.attestation.detail} (${s.attestation.trustedAgents} agents verified the TRE)${s.attestation.pcr ? `, PCR 23 ${s.attestation.pcr.slice(0, 16)}…` : ''}`;
    const g = s.aggregates[0];
    if (g) {
      text('group', g.groupId);
      const t = g.points.map((p) => p.t / 1000);
      chart('aggregate', [
        { label: 'released (noisy) Wh', stroke: '#1f77b4' },
        { label: 'true Wh', stroke: '#ff7f0e', dash: [4, 4] },
      ]).setData([t, g.points.map((p) => p.noisyWh), g.points.map((p) => p.trueWh)]);
      chart('error', [{ label: 'relative error %', stroke: '#d62728' }]).setData([
        t,
        g.points.map((p) => (p.trueWh ? (100 * Math.abs(p.noisyWh - p.trueWh)) / p.trueWh : 0)),
      ]);
    }
    chart('bills', [
      { label: `running total (${s.billing.currency} minor units)`, stroke: '#2ca02c' },
    ]).setData([s.billing.points.map((p) => p.t / 1000), s.billing.points.map((p) => p.runningTotalMinor)]);
    text('statements', `${s.billing.statements} statements sent to suppliers`);
    chart(
      'budget',
      [
        {
          label: 'households',
          stroke: '#9467bd',
          fill: 'rgba(148,103,189,0.3)',
          paths: uPlot.paths.bars({ size: [0.8] }),
        },
      ],
      {
        scales: { x: { time: false } },
        axes: [{ values: (_u, ticks) => ticks.map((i) => s.budget[i]?.bucket ?? '') }, { size: 50 }],
      },
    ).setData([s.budget.map((_b, i) => i), s.budget.map((b) => b.households)]);
    rows('dr', s.dr, (r) => [r.eventId, r.bids, r.accepted, r.creditMinor, r.delivered, r.notDelivered]);
    rows('alerts', s.alerts.slice(-12).reverse(), (a) => [
      a.at.replace('T', ' ').slice(0, 16),
      a.kind,
      a.message,
    ]);
    document.body.dataset.updates = String(Number(document.body.dataset.updates ?? 0) + 1);
  }
  const source = new EventSource('/events');
  source.onmessage = (e) => render(JSON.parse(e.data));
})();
