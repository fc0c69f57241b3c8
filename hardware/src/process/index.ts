export { waitForListening } from './wait-for-listening.js';
