export * from './wait-for-listening.js';
