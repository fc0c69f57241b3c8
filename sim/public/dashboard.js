// Live dashboard: one EventSource; each snapshot redraws small SVG charts (no page reload, no
// chart library). Each chart's left margin is measured from its own tick labels, so they fit.
/* global EventSource, document, window, Intl */
(() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const HEIGHT = 240;
  const TOP = 22; // room for the y unit above the plot
  const BOTTOM = 40; // x tick labels, then the x axis title
  const RIGHT = 14;
  const HOUR = 3_600_000;
  const DAY = 24 * HOUR;
  const TIME_STEPS = [15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080].map((m) => m * 60_000);
  const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

  const compact = new Intl.NumberFormat('en-GB', { notation: 'compact', maximumFractionDigits: 2 });
  const moneyFormats = new Map();
  /** Formats for `currency`: compact for axes, full for tables, and its minor-unit digits. */
  function money(currency) {
    if (!moneyFormats.has(currency)) {
      const full = new Intl.NumberFormat('en-GB', { style: 'currency', currency });
      moneyFormats.set(currency, {
        axis: new Intl.NumberFormat('en-GB', {
          style: 'currency',
          currency,
          notation: 'compact',
          maximumFractionDigits: 2,
        }),
        full,
        digits: full.resolvedOptions().maximumFractionDigits,
      });
    }
    return moneyFormats.get(currency);
  }
  const major = (minor, currency) => minor / 10 ** money(currency).digits;

  const pad = (n) => String(n).padStart(2, '0');
  const day = (t) => `${new Date(t).getUTCDate()} ${MONTHS[new Date(t).getUTCMonth()]}`;
  const hhmm = (t) => `${pad(new Date(t).getUTCHours())}:${pad(new Date(t).getUTCMinutes())}`;
  const when = (iso) => `${day(Date.parse(iso))} ${hhmm(Date.parse(iso))}`;

  function el(name, attrs = {}, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Text widths measured by the browser itself, in a hidden SVG styled like the charts.
  let ruler;
  function textWidth(s) {
    if (!ruler) {
      const svg = el('svg', { class: 'chart', width: 0, height: 0, 'aria-hidden': 'true' });
      svg.style.position = 'absolute';
      svg.style.visibility = 'hidden';
      ruler = el('text');
      svg.append(ruler);
      document.body.append(svg);
    }
    ruler.textContent = s;
    return ruler.getComputedTextLength();
  }

  /** About `count` round ticks (1, 2 or 5 x 10^k apart), the first at or below lo, the last at or above hi. */
  function niceTicks(lo, hi, count = 5) {
    if (hi <= lo) hi = lo + 1;
    const raw = (hi - lo) / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const ticks = [Math.floor(lo / step) * step];
    while (ticks.at(-1) < hi) ticks.push(Number((ticks.at(-1) + step).toPrecision(12)));
    return ticks;
  }

  function timeTicks(lo, hi, plotWidth) {
    const step = TIME_STEPS.find((s) => (hi - lo) / s <= plotWidth / 70) ?? TIME_STEPS.at(-1);
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi; t += step)
      ticks.push({ t, label: step >= DAY || t % DAY === 0 ? day(t) : hhmm(t) });
    return ticks;
  }

  /**
   * One chart into `box`: y axis in `yUnit` (ticks through `yFormat`), x axis either time (`x`: ms)
   * or categories (`categories`), series as lines or bars. Drawn inside its own SVG box.
   */
  function drawChart(box, { x, categories, series, yUnit, xTitle, yFormat = (v) => compact.format(v) }) {
    if (!categories && x.length === 0) {
      box.textContent = 'waiting for the first values…';
      return;
    }
    const width = Math.max(320, box.clientWidth || 560);
    const values = series.flatMap((s) => s.values).filter(Number.isFinite);
    const lo = Math.min(0, ...values);
    const hi = Math.max(lo + 1, ...values);
    const yTicks = niceTicks(lo, hi);
    const yLabels = yTicks.map(yFormat);
    // The unit sits above the tick labels, so only they set the margin.
    const left = Math.ceil(Math.max(...yLabels.map(textWidth))) + 12;
    const plot = { x: left, y: TOP, w: width - left - RIGHT, h: HEIGHT - TOP - BOTTOM };
    const yMin = yTicks[0];
    const yMax = yTicks.at(-1);
    const sy = (v) => plot.y + plot.h - ((v - yMin) / (yMax - yMin || 1)) * plot.h;

    let sx;
    let xTicks;
    if (categories) {
      const slot = plot.w / categories.length;
      sx = (i) => plot.x + slot * (i + 0.5);
      xTicks = categories.map((label, i) => ({ at: sx(i), label }));
    } else {
      const x0 = x.length ? x[0] : 0;
      const x1 = x.length > 1 ? x.at(-1) : x0 + HOUR;
      sx = (t) => plot.x + ((t - x0) / (x1 - x0)) * plot.w;
      xTicks = timeTicks(x0, x1, plot.w).map((k) => ({ at: sx(k.t), label: k.label }));
    }

    const svg = el('svg', { class: 'chart', width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}` });
    svg.append(el('rect', { class: 'plot-area', x: plot.x, y: plot.y, width: plot.w, height: plot.h }));
    yTicks.forEach((v, i) => {
      const y = sy(v);
      svg.append(
        el('line', { class: v === 0 ? 'grid zero' : 'grid', x1: plot.x, x2: plot.x + plot.w, y1: y, y2: y }),
      );
      svg.append(
        el('text', { class: 'tick tick-y', x: plot.x - 6, y: y + 4, 'text-anchor': 'end' }, yLabels[i]),
      );
    });
    for (const k of xTicks) {
      if (!categories)
        svg.append(el('line', { class: 'grid', x1: k.at, x2: k.at, y1: plot.y, y2: plot.y + plot.h }));
      // Centred under its tick, kept inside the chart at either end.
      const half = textWidth(k.label) / 2;
      const at = Math.min(width - half - 1, Math.max(half + 1, k.at));
      svg.append(
        el(
          'text',
          { class: 'tick tick-x', x: at, y: plot.y + plot.h + 15, 'text-anchor': 'middle' },
          k.label,
        ),
      );
    }
    svg.append(el('text', { class: 'unit unit-y', x: 1, y: 12 }, yUnit));
    svg.append(
      el(
        'text',
        { class: 'unit unit-x', x: plot.x + plot.w / 2, y: HEIGHT - 4, 'text-anchor': 'middle' },
        xTitle,
      ),
    );

    for (const s of series) {
      const g = el('g', { class: 'series', 'data-series': s.key, 'data-points': s.values.length });
      if (s.bars) {
        const w = (plot.w / s.values.length) * 0.8;
        s.values.forEach((v, i) => {
          const y = sy(Math.max(0, v));
          g.append(
            el('rect', { x: sx(i) - w / 2, y, width: w, height: Math.abs(sy(v) - sy(0)), fill: s.color }),
          );
        });
      } else {
        const d = s.values
          .map((v, i) => (Number.isFinite(v) ? `${sx(x[i]).toFixed(1)},${sy(v).toFixed(1)}` : undefined))
          .filter(Boolean)
          .map((p, i) => `${i ? 'L' : 'M'}${p}`)
          .join('');
        const attrs = { d: d || 'M0,0', fill: 'none', stroke: s.color, 'stroke-width': 1.5 };
        if (s.dash) attrs['stroke-dasharray'] = s.dash;
        g.append(el('path', attrs));
      }
      svg.append(g);
    }

    const legend = document.createElement('div');
    legend.className = 'legend';
    for (const s of series) {
      const item = document.createElement('span');
      const swatch = document.createElement('i');
      swatch.style.borderColor = s.color;
      if (s.dash) swatch.style.borderTopStyle = 'dashed';
      item.append(swatch, s.label);
      legend.append(item);
    }
    box.replaceChildren(svg, legend);
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

  function renderAggregates(g) {
    text('group', g.groupId);
    const t = g.points.map((p) => p.t);
    drawChart(document.getElementById('aggregate'), {
      x: t,
      yUnit: 'kWh',
      xTitle: 'interval start (UTC)',
      series: [
        {
          key: 'noisy',
          label: 'released (noisy) total',
          color: '#1f77b4',
          values: g.points.map((p) => p.noisyWh / 1000),
        },
        {
          key: 'true',
          label: 'true total',
          color: '#ff7f0e',
          dash: '4 3',
          values: g.points.map((p) => p.trueWh / 1000),
        },
      ],
    });
    // The noise is what the TRE added to the total it noised (members clamped to the release's bound).
    const noise = g.points.map((p) => Math.abs(p.noisyWh - p.clampedWh));
    drawChart(document.getElementById('error'), {
      x: t,
      yUnit: 'kWh',
      xTitle: 'interval start (UTC)',
      series: [
        {
          key: 'error',
          label: 'measured error |released − true|',
          color: '#d62728',
          values: noise.map((n) => n / 1000),
        },
        {
          key: 'bound',
          label: 'stated 95 % bound',
          color: '#555',
          dash: '6 3',
          values: g.points.map((p) => p.bound95Wh / 1000),
        },
      ],
    });
    const outside = g.points.filter((p, i) => noise[i] >= p.bound95Wh).length;
    const clampedOff = g.points.reduce((a, p) => a + p.trueWh - p.clampedWh, 0);
    const share = g.points.length ? Math.round((100 * outside) / g.points.length) : 0;
    text(
      'dpSummary',
      `${outside} of ${g.points.length} releases shown (${share} %) outside the stated bound; about 5 % expected.` +
        (clampedOff > 0
          ? ` Clamping each household to the release's bound cut ${compact.format(clampedOff / 1000)} kWh (not covered by the bound; "true" here is the clamped total).`
          : ''),
    );
  }

  function render(s) {
    text('simTime', `${s.simTime.replace('T', ' ').slice(0, 16)} UTC`);
    text('speed', s.speed);
    text('households', s.households);
    const att = document.getElementById('attestation');
    att.className = `status-${s.attestation.status}`;
    att.textContent = `${s.attestation.status}: ${s.attestation.detail} (${s.attestation.trustedAgents} agents verified the TRE)${s.attestation.pcr ? `, PCR 23 ${s.attestation.pcr.slice(0, 16)}…` : ''}`;
    if (s.aggregates[0]) renderAggregates(s.aggregates[0]);

    const { currency } = s.billing;
    const fmt = money(currency);
    drawChart(document.getElementById('bills'), {
      x: s.billing.points.map((p) => p.t),
      yUnit: currency,
      xTitle: 'simulated time (UTC)',
      yFormat: (v) => fmt.axis.format(v),
      series: [
        {
          key: 'bills',
          label: 'running bills of the open period, sum over households',
          color: '#2ca02c',
          values: s.billing.points.map((p) => major(p.runningTotalMinor, currency)),
        },
      ],
    });
    text('statements', `${s.billing.statements} statements sent to the supplier`);
    rows('periods', s.billing.periods, (p) => [
      `${when(p.periodStart)} – ${when(p.periodEnd)}`,
      p.statements,
      fmt.full.format(major(p.totalMinor, currency)),
      p.estimated,
    ]);

    drawChart(document.getElementById('budget'), {
      categories: s.budget.map((b) => b.bucket.replace(/\s*%$/, '')),
      yUnit: 'households',
      xTitle: "share of today's privacy budget spent (%)",
      series: [
        {
          key: 'budget',
          label: 'households',
          color: '#9467bd',
          bars: true,
          values: s.budget.map((b) => b.households),
        },
      ],
    });
    rows('dr', s.dr, (r) => [
      r.eventId,
      `${when(r.windowStart)}–${hhmm(Date.parse(r.windowEnd))}`,
      r.bids,
      r.accepted,
      fmt.full.format(major(r.creditMinor, currency)),
      r.delivered,
      r.notDelivered,
    ]);
    rows('alerts', s.alerts.slice(-12).reverse(), (a) => [
      a.at.replace('T', ' ').slice(0, 16),
      a.kind,
      a.message,
    ]);
    document.body.dataset.updates = String(Number(document.body.dataset.updates ?? 0) + 1);
  }

  let last;
  window.addEventListener('resize', () => last && render(last));
  const source = new EventSource('/events');
  source.onmessage = (e) => {
    last = JSON.parse(e.data);
    render(last);
  };
})();
