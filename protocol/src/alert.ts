import { z } from 'zod';
import { instant, partyId, version } from './envelope.js';

/**
 * TRE -> household on `inbox/alert`: something the household should know about its own data. The
 * regulator gets a copy of each bounds-check alert on its own inbox, naming the meter (`meterId`,
 * on the regulator's copy only: the regulator registers households by id, no provider sees it).
 */
export const alertSchema = z.strictObject({
  v: version,
  meterId: partyId.optional(),
  kind: z.enum(['reading-out-of-bounds', 'conflicting-duplicate', 'register-backwards', 'attestation']),
  message: z.string().max(512),
  at: instant,
});
export type Alert = z.infer<typeof alertSchema>;
