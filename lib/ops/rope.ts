/** rope ops (to be implemented). */
export {};
