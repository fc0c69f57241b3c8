/** Wire protocol version. Every payload carries it as `v`; topics are rooted at `tre/v<major>`. */
export const PROTOCOL_VERSION = 1 as const;
export const TOPIC_ROOT = `tre/v${PROTOCOL_VERSION}` as const;
