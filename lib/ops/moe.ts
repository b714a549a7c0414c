/** moe ops (to be implemented). */
export {};
