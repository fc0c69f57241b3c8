#!/usr/bin/env node
import { main } from './cli/party.js';

process.exitCode = await main(process.argv);
