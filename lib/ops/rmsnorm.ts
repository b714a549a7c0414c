/** rmsnorm ops (to be implemented). */
export {};
