/** adamw ops (to be implemented). */
export {};
