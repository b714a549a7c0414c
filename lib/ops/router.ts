/** router ops (to be implemented). */
export {};
