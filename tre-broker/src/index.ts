export * from './access/access-matrix.js';
export * from './access/peer-identity.js';
export * from './broker/message-router.js';
export * from './broker/tls-mqtt-broker.js';
export * from './log.js';
export * from './pki/certificate-authority.js';
export * from './pki/revocation-list.js';
export * from './tre.js';
