// What the console knows about the deployment: GET /api/config (targets, links, modes) and
// the danger-group labels of the negative list.

/** The centre-wide switches (GET /api/controls, the centre_controls event): the same on every instance. */
export const centre = {suggestionsPaused: false, ivrOffersPaused: false, by: '', at: 0};

export function setCentre(data) {
  if (!data || typeof data !== 'object') return;
  centre.suggestionsPaused = Boolean(data.suggestions_paused);
  centre.ivrOffersPaused = Boolean(data.ivr_offers_paused);
  centre.by = String(data.by || '');
  centre.at = Number(data.at) || 0;
}

export const conf = {
  targets: [], // [{id, name, number, urgent}]
  byId: new Map(),
  links: {}, // danger group id -> urgent target id
  modes: ['three-way', 'refer', 'attended'],
  defaultMode: 'three-way',
  ruleVersion: '',
};

// Danger groups of the default negative list (fenliu/router/negative_list.toml). Decisions carry
// only the group id; a deployment's own list replaces these labels when GET /api/negative-list
// can be read (see learnDangerLabels).
const dangerLabels = {
  weapon: '持械/凶器',
  violence: '暴力/殴打',
  threat: '威胁/恐吓',
  detention: '抢劫/绑架/非法拘禁',
  theft: '盗窃',
  fraud: '诈骗（反诈止付）',
  drugs_gambling: '涉毒/涉赌/涉黄',
  sexual: '性侵害',
  person_at_risk: '人身危险/伤病',
  suicide: '自杀/轻生',
  missing: '走失/失踪',
  fire: '火灾/爆炸/燃气泄漏（联动119）',
  traffic_accident: '交通事故（联动122）',
  drunk_driving: '酒驾/醉驾（联动122）',
  stalking: '跟踪/当下人身威胁',
  repeat_unresolved: '重复报警/升级风险',
  plea: '紧急求助语气',
  public_order: '聚集/扰乱秩序',
  repeat_caller: '同一来电人重复报警',
};

export const MODE_LABELS = {'three-way': '三方通话', refer: 'REFER 直接转', attended: '咨询转接'};

/** Take in GET /api/config. */
export function loadConfig(data) {
  const targets = Array.isArray(data.targets) ? data.targets : [];
  conf.targets = targets.filter((t) => t && typeof t.id === 'string' && t.id);
  conf.byId = new Map(conf.targets.map((t) => [t.id, t]));
  conf.links = data.links && typeof data.links === 'object' ? data.links : {};
  if (Array.isArray(data.modes) && data.modes.length) conf.modes = data.modes.map(String);
  conf.defaultMode = conf.modes.includes(data.default_mode) ? data.default_mode : conf.modes[0] || 'three-way';
  conf.ruleVersion = data.rule_version ? String(data.rule_version) : '';
}

/** Read the danger groups' labels from the negative list's TOML text ([[danger]] id / label). */
export function learnDangerLabels(text) {
  if (typeof text !== 'string') return;
  for (const block of text.split(/^\s*\[\[danger\]\]\s*$/m).slice(1)) {
    const body = block.split(/^\s*\[/m)[0]; // up to the next table header
    const id = body.match(/^\s*id\s*=\s*"([^"]*)"/m);
    const label = body.match(/^\s*label\s*=\s*"([^"]*)"/m);
    if (id && label && id[1] && label[1]) dangerLabels[id[1]] = label[1];
  }
}

export const dangerLabel = (group) => dangerLabels[group] || group || '危险信号';

/** The configured target (or a stand-in for an id the config does not know). */
export function target(id) {
  return conf.byId.get(id) || {id, name: id === 'police' ? '110 接警' : String(id || ''), number: id === 'police' ? '110' : '', urgent: false};
}

/** The short form shown on keys: the number, else the name ("12345", "社会联动…"). */
export function targetShort(id) {
  const t = target(id);
  return t.number || t.name || String(id);
}

/** The name without a leading repetition of the number ("12345 政务服务…" -> "政务服务…"). */
export function targetName(id) {
  const t = target(id);
  const name = String(t.name || t.id || '');
  if (t.number && name.startsWith(t.number)) return name.slice(t.number.length).trim() || name;
  return name;
}

export const urgentTargets = () => conf.targets.filter((t) => t.urgent);

/** The urgent target a danger group's card offers (config links), if it is configured. */
export function linkFor(group) {
  const id = conf.links[group];
  return id && conf.byId.has(id) ? id : '';
}

/** The anti-fraud desk: links.fraud, else an urgent target that names fraud. */
export function fraudDesk() {
  const linked = linkFor('fraud');
  if (linked) return linked;
  const t = conf.targets.find((x) => x.urgent && /fraud|反诈/i.test(`${x.id} ${x.name}`));
  return t ? t.id : '';
}
