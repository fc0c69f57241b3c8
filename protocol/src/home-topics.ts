/**
 * The topics of the household's own MQTT broker (the one Home Assistant uses), where the meter
 * agent publishes what the household may see of itself. Never the TRE's broker, never a provider.
 *
 *   meter-agent/<node>/availability                   online / offline (retained; offline is the will)
 *   meter-agent/<node>/<state>                        JSON states (retained): meter, interval, bill, dr, tre
 *   meter-agent/<node>/<command>/set                  commands from the house: dr-override
 *   <prefix>/<component>/<node>_<object>/config       Home Assistant discovery (retained)
 *   <prefix>/status                                   Home Assistant's birth and will (online / offline)
 *
 * `<node>` and `<object>` are `[a-zA-Z0-9_-]`, as Home Assistant's discovery topics allow.
 */

export const HOME_TOPIC_ROOT = 'meter-agent';

export const HOME_STATES = ['meter', 'interval', 'bill', 'dr', 'tre'] as const;
export type HomeState = (typeof HOME_STATES)[number];

export const HOME_COMMANDS = ['dr-override'] as const;
export type HomeCommand = (typeof HOME_COMMANDS)[number];

/** The Home Assistant entity platforms the agent announces. */
export type DiscoveryComponent = 'sensor' | 'binary_sensor' | 'button';

const HA_ID = /^[a-zA-Z0-9_-]{1,64}$/;

function checkHaId(id: string, what: string): string {
  if (!HA_ID.test(id)) throw new Error(`invalid ${what} ${JSON.stringify(id)}: use 1-64 of a-z A-Z 0-9 _ -`);
  return id;
}

function checkPrefix(prefix: string): string {
  if (prefix === '' || /[#+\s]/.test(prefix))
    throw new Error(`invalid discovery prefix ${JSON.stringify(prefix)}`);
  return prefix;
}

/** A node id from anything (a meter id, say): characters Home Assistant does not allow become `_`. */
export function homeNodeId(from: string): string {
  const id = from.replace(/[^a-zA-Z0-9_-]/g, '_').slice(0, 64);
  return id === '' ? 'meter' : id;
}

export const homeTopics = {
  availability: (node: string) => `${HOME_TOPIC_ROOT}/${checkHaId(node, 'node id')}/availability`,
  state: (node: string, state: HomeState) => `${HOME_TOPIC_ROOT}/${checkHaId(node, 'node id')}/${state}`,
  command: (node: string, command: HomeCommand) =>
    `${HOME_TOPIC_ROOT}/${checkHaId(node, 'node id')}/${command}/set`,
  /** Single-component discovery, with the unique id `<node>_<object>` as object id (HA's advice). */
  discovery: (prefix: string, component: DiscoveryComponent, node: string, object: string) =>
    `${checkPrefix(prefix)}/${component}/${checkHaId(`${node}_${object}`, 'unique id')}/config`,
  /** Home Assistant's birth message: on `online` the configs and states are sent again. */
  haStatus: (prefix: string) => `${checkPrefix(prefix)}/status`,
} as const;
